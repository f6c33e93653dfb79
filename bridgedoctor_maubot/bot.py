"""Plugin wiring only: config, settings, the instance database, the command handler class and
the watch."""

from __future__ import annotations

import asyncio
from typing import Any

from maubot import Plugin
from mautrix.util.async_db import UpgradeTable
from mautrix.util.config import BaseProxyConfig

from .commands import Commands
from .config import Config, Settings
from .migrations import upgrade_table
from .store import Store
from .watch import Watch


class BridgeDoctorPlugin(Plugin):
    settings: Settings
    commands: Commands
    watch: Watch

    @classmethod
    def get_config_class(cls) -> type[BaseProxyConfig]:
        return Config

    @classmethod
    def get_db_upgrade_table(cls) -> UpgradeTable:
        return upgrade_table

    async def start(self) -> None:
        self._load_settings()
        store = Store(self.database)
        self.commands = Commands(
            self._current_settings, self.log.getChild("cmd"), self.client, store
        )
        self.register_handler_class(self.commands)
        self.watch = Watch(self._current_settings, store, self.client, self.log.getChild("watch"))
        self.watch.start()
        # Answered in the background: start() should not wait on the homeserver.
        self._answering: asyncio.Task[Any] = asyncio.create_task(
            self.commands.resets.answer_open_plans()
        )

    async def stop(self) -> None:
        self.commands.resets.close()
        self._answering.cancel()
        await self.watch.stop()

    def on_external_config_update(self) -> None:
        self._load_settings()
        self.watch.wake()

    def _current_settings(self) -> Settings:
        # Read at every command, so config edits in the maubot UI apply without a restart.
        return self.settings

    def _load_settings(self) -> None:
        self.config.load_and_update()
        self.settings = Settings.load(self.config.__getitem__)
        for problem in self.settings.problems():
            self.log.warning(f"bridgedoctor config: {problem}")
