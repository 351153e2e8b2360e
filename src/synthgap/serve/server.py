"""Running the app: gunicorn (threaded workers, each loading the models once), or Flask's
development server with debug=True."""
from __future__ import annotations

from gunicorn.app.base import BaseApplication

from synthgap.serve.config import ServeConfig


class GunicornServer(BaseApplication):
    """gunicorn with its settings from a ServeConfig and the app built inside each worker."""

    def __init__(self, cfg: ServeConfig):
        self.cfg_serve = cfg
        super().__init__()

    def load_config(self) -> None:
        cfg = self.cfg_serve
        settings = {
            "bind": f"[{cfg.host}]:{cfg.port}" if ":" in cfg.host else f"{cfg.host}:{cfg.port}",
            "workers": cfg.workers,
            # Threads let concurrent requests of one worker meet in its micro-batcher.
            "worker_class": "gthread", "threads": cfg.threads,
            # A worker is silent while it loads models or runs a long generation.
            "timeout": int(max(120, cfg.generate_timeout + 60)),
            "preload_app": False,  # models load after the fork: no torch (or CUDA) state crosses a fork
            "errorlog": "-",
        }
        for key, value in settings.items():
            self.cfg.set(key, value)

    def load(self):
        from gunicorn.errors import AppImportError

        from synthgap import SynthgapError
        from synthgap.serve import create_app

        try:
            return create_app(self.cfg_serve)
        except SynthgapError as e:  # gunicorn prints this line alone and stops (exit code 4)
            raise AppImportError(f"error: {e}") from None


def run(cfg: ServeConfig) -> None:
    """Serve until interrupted."""
    if cfg.debug:
        from synthgap.serve import create_app

        create_app(cfg).run(cfg.host, cfg.port, debug=True, threaded=True, use_reloader=False)
    else:
        GunicornServer(cfg).run()
