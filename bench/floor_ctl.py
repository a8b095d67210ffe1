#!/usr/bin/env python3
"""The floor for a CLI: start Python, one status round trip, print, exit.

Usage: floor_ctl.py ENDPOINT. Whatever a real CLI does beyond this (option
parsing, imports, formatting) is its own cost.
"""

import json
import sys
import uuid

import zmq

context = zmq.Context()
dealer = context.socket(zmq.DEALER)
dealer.setsockopt(zmq.LINGER, 0)
dealer.connect(sys.argv[1])
request_id = uuid.uuid4().hex
message = {"command": "status", "properties": {}, "id": request_id}
dealer.send(json.dumps(message).encode())
if not dealer.poll(10_000):
    sys.exit("floor_ctl: no reply within 10s")
print(json.loads(dealer.recv())["status"])
dealer.close()
context.term()
