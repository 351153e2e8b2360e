"""Running the app: gunicorn (threaded workers, each loading the models once), or Flask's
development server with debug=True."""

from __future__ import annotations

import os

from gunicorn.app.base import BaseApplication

from synthgap.serve.config import ServeConfig


def worker_threads(cfg: ServeConfig) -> None:
    """The torch CPU threads of one worker process: torch_threads, or the cores shared among the workers."""
    from synthgap.device import set_threads

    set_threads(cfg.torch_threads or max(1, (os.cpu_count() or 1) // cfg.workers))


class GunicornServer(BaseApplication):
    """gunicorn with its settings from a ServeConfig and the app built inside each worker."""

    def __init__(self, cfg: ServeConfig):
        self.cfg_serve = cfg
        super().__init__()

    def load_config(self) -> None:
        from synthgap.serve.worker import BufferingWorker

        cfg = self.cfg_serve
        # Set before the workers fork: each request is read whole by the worker's event loop within
        # read_timeout before it takes a thread (serve.worker), so slow clients hold no thread.
        BufferingWorker.read_timeout, BufferingWorker.max_body = cfg.read_timeout, cfg.max_upload_bytes
        settings = {
            "bind": f"[{cfg.host}]:{cfg.port}" if ":" in cfg.host else f"{cfg.host}:{cfg.port}",
            "workers": cfg.workers,
            # Threads let concurrent requests of one worker meet in its micro-batcher.
            "worker_class": BufferingWorker,
            "threads": cfg.threads,
            # A worker is replaced after this many requests (jittered): a burst's memory is given back.
            "max_requests": cfg.max_requests,
            "max_requests_jitter": cfg.max_requests_jitter,
            # No control socket: gunicorn's default is one path per user ($XDG_RUNTIME_DIR or ~/.gunicorn),
            # so one synthgap server stopping would delete another's; synthgap runs no gunicornc.
            "control_socket_disable": True,
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

        worker_threads(self.cfg_serve)
        try:
            return create_app(self.cfg_serve)
        except SynthgapError as e:  # gunicorn prints this line alone and stops (exit code 4)
            raise AppImportError(f"error: {e}") from None


def run(cfg: ServeConfig) -> None:
    """Serve until interrupted."""
    if cfg.debug:
        from synthgap.serve import create_app

        worker_threads(cfg)
        create_app(cfg).run(cfg.host, cfg.port, debug=True, threaded=True, use_reloader=False)
    else:
        GunicornServer(cfg).run()
