"""Request bodies are standard JSON, checked by every route's parser.

FastAPI parses a JSON body with Python's `json`, which also takes NaN, Infinity, lone
surrogates and any nesting; such values fail far from the request (an answer that cannot
be encoded, a stored task no page can show). Every router is built with `JsonBodyRoute`,
which parses with `store.standard_json` instead and answers 422 with what is wrong.
"""

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import HTTPException, Request, Response
from fastapi.routing import APIRoute

from preannotate.store import InvalidInput, standard_json


class StandardJsonRequest(Request):
    async def json(self) -> Any:
        """The body as standard JSON; an HTTPException, as FastAPI turns any other error
        raised while it reads the body into a 400 that does not say why."""
        try:
            return standard_json.parse(await self.body(), "request body")
        except InvalidInput as error:
            raise HTTPException(422, str(error)) from None


class JsonBodyRoute(APIRoute):
    """A route whose JSON body is read by `StandardJsonRequest`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def standard(request: Request) -> Response:
            return await handler(StandardJsonRequest(request.scope, request.receive))

        return standard
