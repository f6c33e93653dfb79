"""Plugin wiring only: config, settings and the command handler class."""

from __future__ import annotations

from maubot import Plugin
from mautrix.util.config import BaseProxyConfig

from .commands import Commands
from .config import Config, Settings


class BridgeDoctorPlugin(Plugin):
    settings: Settings
    commands: Commands

    @classmethod
    def get_config_class(cls) -> type[BaseProxyConfig]:
        return Config

    async def start(self) -> None:
        self._load_settings()
        self.commands = Commands(self._current_settings, self.log.getChild("cmd"), self.client)
        self.register_handler_class(self.commands)

    async def stop(self) -> None:
        self.commands.resets.close()

    def on_external_config_update(self) -> None:
        self._load_settings()

    def _current_settings(self) -> Settings:
        # Read at every command, so config edits in the maubot UI apply without a restart.
        return self.settings

    def _load_settings(self) -> None:
        self.config.load_and_update()
        self.settings = Settings.load(self.config.__getitem__)
        for problem in self.settings.problems():
            self.log.warning(f"bridgedoctor config: {problem}")
