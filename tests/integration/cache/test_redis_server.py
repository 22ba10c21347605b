"""The private Redis of tests, the demo and the benchmark (`voice.emulators.redis_server`): a port it chose
itself that another process takes before redis-server binds it must not leave it talking to somebody
else's Redis (two test workers sharing one database) or failing."""

from __future__ import annotations

import pytest

from voice.emulators.redis_server import RedisServer, RedisServerError, _server_pid


def test_a_chosen_port_taken_by_another_redis_is_given_up_for_a_free_one() -> None:
    with RedisServer() as theirs:
        ours = RedisServer()
        ours.port = theirs.port  # the race: another server took the port this one had chosen
        try:
            ours.start()
            assert ours.port != theirs.port
            assert ours.process is not None and _server_pid(ours.port) == ours.process.pid
            assert theirs.process is not None and _server_pid(theirs.port) == theirs.process.pid
        finally:
            ours.close()


def test_a_port_given_by_the_caller_that_is_taken_is_an_error_naming_it() -> None:
    with RedisServer() as theirs:
        ours = RedisServer(port=theirs.port)
        try:
            with pytest.raises(RedisServerError, match=f"port {theirs.port} is taken"):
                ours.start()
        finally:
            ours.close()
