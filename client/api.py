"""A typed Python client for the HTTP API."""

import time
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"


class ApiError(Exception):
    """A 4xx/5xx answer: `status_code` and the server's `detail` message."""

    def __init__(self, status_code: int, detail: str, body: dict[str, Any] | None = None):
        self.status_code = status_code
        self.detail = detail
        self.body = body or {}
        super().__init__(f"{status_code}: {detail}")


class Client:
    def __init__(self, url: str = DEFAULT_URL, token: str | None = None, timeout: float = 120):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=url, headers=headers, timeout=timeout)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *_: object) -> None:
        self.http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.http.request(method, path, **kwargs)
        if response.is_error:
            try:
                body = response.json()
            except ValueError:
                body = {"detail": response.text}
            detail = body.get("detail", response.text)
            raise ApiError(
                response.status_code, detail if isinstance(detail, str) else str(detail), body
            )
        return response.json()

    def health(self) -> dict[str, Any]:
        return self._call("GET", "/health")

    def models(self) -> list[dict[str, Any]]:
        return self._call("GET", "/models")

    def create_project(self, config: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", "/projects", json=config)

    def projects(self) -> list[dict[str, Any]]:
        return self._call("GET", "/projects")

    def project(self, project_id: int) -> dict[str, Any]:
        return self._call("GET", f"/projects/{project_id}")

    def set_config(self, project_id: int, config: dict[str, Any]) -> dict[str, Any]:
        return self._call("PUT", f"/projects/{project_id}/config", json=config)

    def deploy(self, project_id: int) -> dict[str, Any]:
        return self._call("POST", f"/projects/{project_id}/deploy")

    def preannotate_options(self, project_id: int) -> dict[str, Any]:
        return self._call("GET", f"/projects/{project_id}/preannotate/options")

    def servers(self) -> list[dict[str, Any]]:
        return self._call("GET", "/servers")

    def server(self, server_id: str) -> dict[str, Any]:
        return self._call("GET", f"/servers/{server_id}")

    def delete_server(self, server_id: str) -> dict[str, Any]:
        return self._call("DELETE", f"/servers/{server_id}")

    def predict(self, server_id: str, tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return self._call("POST", f"/servers/{server_id}/predict", json={"tasks": tasks})[
            "predictions"
        ]

    def wait_until_ready(self, server_id: str, timeout: float = 300) -> dict[str, Any]:
        """Poll until the server is ready; raise ApiError when it fails or time runs out."""
        deadline = time.monotonic() + timeout
        while True:
            server = self.server(server_id)
            if server["status"] == "ready":
                return server
            if server["status"] in ("failed", "deleted") or time.monotonic() > deadline:
                raise ApiError(
                    409, f"server {server_id} is {server['status']}: {server.get('message')}"
                )
            time.sleep(0.5)
