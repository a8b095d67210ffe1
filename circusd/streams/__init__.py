"""Where a child's stdout and stderr go: the built-in stream classes, a
custom class from the config file, and the pipes that feed them.

Output is bytes end to end: a file stream writes exactly what the child
wrote, and the text views (FancyStdoutStream, JournalStream, SyslogStream)
decode it by one stated rule (streams.base). A pipe is read only when it
is readable, and a sink that fails (disk full, I/O error, a log daemon
that is gone) drops data with one log line instead of blocking the child.
"""

from circusd.streams.base import Stream
from circusd.streams.factory import builtin_stream, make_stream
from circusd.streams.files import FileStream, TimedRotatingFileStream, WatchedFileStream
from circusd.streams.pipes import Output

__all__ = [
    "FileStream",
    "Output",
    "Stream",
    "TimedRotatingFileStream",
    "WatchedFileStream",
    "builtin_stream",
    "make_stream",
]
