"""When a client has gone: live streams stop sending, uploads stop being read."""

from starlette.types import Receive


async def until_disconnect(receive: Receive) -> None:
    """Returns once the client has closed its connection. Called once the request's body
    has been read (or has none): the next ASGI message is then the disconnect."""
    while (await receive())["type"] != "http.disconnect":
        pass
