# circusctl talks to the packaged circusd (/etc/circus/circusd.ini) unless
# told otherwise with --endpoint or an earlier CIRCUSCTL_ENDPOINT.
: "${CIRCUSCTL_ENDPOINT:=ipc:///run/circus/ctl.sock}"
export CIRCUSCTL_ENDPOINT
