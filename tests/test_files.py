"""``files.write_private``: a reader of a file the hub rewrites (the proxy's pid file, its
token, the cookie secret) sees the old text or the new, never an empty or partial file."""

from __future__ import annotations

import os
import threading

from courtyard.files import write_private


def test_readers_never_see_an_empty_or_partial_file(tmp_path):
    path = tmp_path / "courtyard-proxy.pid"
    write_private(path, "1" * 4096)
    seen: set[str] = set()
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            seen.add(path.read_text())

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for n in range(2, 400):
            write_private(path, str(n % 10) * 4096)
    finally:
        done.set()
        reader.join()
    assert seen and all(len(text) == 4096 and len(set(text)) == 1 for text in seen)
    assert path.stat().st_mode & 0o777 == 0o600
    assert os.listdir(tmp_path) == ["courtyard-proxy.pid"]  # no temporary file left behind
