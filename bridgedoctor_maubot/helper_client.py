"""Client of the privileged host helper: bridgedoctor.protocol plus plain-sentence errors.

Every failure becomes a HelperError whose message is one sentence an admin can act on, naming
the socket path and what to check. The token is sent to the helper and nowhere else.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from bridgedoctor import protocol

SERVICE = "bridgedoctor-helper.service"


class HelperError(Exception):
    """A helper call failed; str(exc) is the sentence for the room."""

    def __init__(self, sentence: str, code: str) -> None:
        super().__init__(sentence)
        self.sentence = sentence
        self.code = code


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def explain_os_error(exc: BaseException, path: str, timeout: float) -> HelperError:
    """The sentence for a connection problem (the helper never answered)."""
    if isinstance(exc, FileNotFoundError):
        return HelperError(
            f"The bridgedoctor helper socket {path} does not exist: is {SERVICE} running on "
            "the host, and is the socket mounted into the maubot container?",
            "socket_missing",
        )
    if isinstance(exc, PermissionError):
        return HelperError(
            f"Permission denied on the bridgedoctor helper socket {path}: the socket's group and "
            "mode (socket_group, socket_mode in the helper config) must let maubot's user "
            "connect.",
            "permission_denied",
        )
    if isinstance(exc, ConnectionRefusedError):
        return HelperError(
            f"The bridgedoctor helper is not answering on {path}: is {SERVICE} running on "
            "the host, and is the socket mounted into the maubot container?",
            "not_listening",
        )
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return HelperError(
            f"The bridgedoctor helper on {path} did not answer within {timeout:g} seconds: "
            f"check `journalctl -u {SERVICE}` on the host.",
            "timeout",
        )
    return HelperError(
        f"The bridgedoctor helper on {path} closed the connection without an answer: "
        f"check `journalctl -u {SERVICE}` on the host.",
        "connection",
    )


def explain_refusal(err: protocol.ProtocolError, path: str) -> HelperError:
    """The sentence for an error the helper answered with."""
    message = _one_line(err.message)
    if err.code == protocol.E_UNAUTHORIZED:
        # The helper says so for a wrong token and for a uid outside its allowed_uids.
        sentence = (
            f"The bridgedoctor helper on {path} refused the plugin ({message}): `token` in the "
            "maubot instance config must equal the content of the helper's token_file, and if "
            "the helper sets allowed_uids, maubot's uid must be listed."
        )
    elif err.code in (protocol.E_UNKNOWN_BRIDGE, protocol.E_RESET):
        sentence = message
    elif err.code == protocol.E_BUSY:
        sentence = "The bridgedoctor helper is busy with other checks; try again in a minute."
    elif err.code == protocol.E_TIMEOUT:
        sentence = f"The bridgedoctor helper gave up: {_lower_first(message)}"
    else:
        sentence = f"The bridgedoctor helper on {path} reported an error: {message}"
    return HelperError(sentence, err.code)


# Called with each progress state the helper sends while a reset or restore runs.
OnProgress = Callable[[dict[str, Any]], object]


class HelperClient:
    def __init__(self, socket_path: str, token: str, timeout: float) -> None:
        self.socket_path = socket_path
        self._token = token
        self.timeout = timeout

    def __repr__(self) -> str:  # no token
        return f"HelperClient({self.socket_path!r}, timeout={self.timeout:g})"

    async def list_bridges(self) -> dict[str, Any]:
        return await self._call("list")

    async def check(self, bridge: str, deep: bool = False) -> dict[str, Any]:
        if deep:
            return await self._call("check", bridge, deep=True)
        return await self._call("check", bridge)

    async def check_all(self) -> dict[str, Any]:
        return await self._call("check_all")

    async def logs(self, bridge: str) -> dict[str, Any]:
        return await self._call("logs", bridge)

    async def reset_plan(self, bridge: str, mode: str) -> dict[str, Any]:
        return await self._call("reset_plan", bridge, mode=mode)

    async def reset(
        self,
        bridge: str,
        mode: str,
        plan: str,
        digest: str,
        requested_by: str,
        on_progress: OnProgress | None = None,
    ) -> dict[str, Any]:
        return await self._call(
            "reset", bridge, on_progress, mode=mode, plan=plan, digest=digest,
            requested_by=requested_by,
        )  # fmt: skip

    async def backups(self, bridge: str) -> dict[str, Any]:
        return await self._call("backups", bridge)

    async def restore_plan(self, bridge: str, backup: str) -> dict[str, Any]:
        return await self._call("restore_plan", bridge, backup=backup)

    async def restore(
        self,
        bridge: str,
        backup: str,
        digest: str,
        requested_by: str,
        on_progress: OnProgress | None = None,
    ) -> dict[str, Any]:
        return await self._call(
            "restore", bridge, on_progress, backup=backup, digest=digest,
            requested_by=requested_by,
        )  # fmt: skip

    async def apply_plan(self, bridge: str) -> dict[str, Any]:
        return await self._call("apply_plan", bridge)

    async def apply(
        self, bridge: str, plan: str, digest: str, requested_by: str
    ) -> dict[str, Any]:
        return await self._call(
            "apply", bridge, plan=plan, digest=digest, requested_by=requested_by
        )

    async def verify(self, bridge: str) -> dict[str, Any]:
        return await self._call("verify", bridge)

    async def _call(
        self,
        op: str,
        bridge: str | None = None,
        on_progress: OnProgress | None = None,
        **fields: str | bool,
    ) -> dict[str, Any]:
        if not self._token:
            raise HelperError(
                "The plugin has no token configured: set `token` in the maubot instance config "
                "to the content of the helper's token_file.",
                "no_token",
            )
        if on_progress is not None:
            fields["progress"] = True
        req = protocol.Request(token=self._token, op=op, bridge=bridge, **fields)  # type: ignore[arg-type]
        try:
            return await protocol.call(self.socket_path, req, self.timeout, on_progress)
        except protocol.ProtocolError as err:
            raise explain_refusal(err, self.socket_path) from None
        except (OSError, TimeoutError, asyncio.TimeoutError) as exc:
            raise explain_os_error(exc, self.socket_path, self.timeout) from None
        except ValueError:  # readline over the size limit
            raise HelperError(
                f"The bridgedoctor helper on {self.socket_path} sent an answer larger than "
                f"{protocol.MAX_RESPONSE_BYTES // (1024 * 1024)} MiB.",
                "too_large",
            ) from None
