"""The web page: the Streamlit app that ``deepfake-detector app`` starts (see docs/app.md).

``streamlit_app.py`` is the page, a thin layer of widgets over :mod:`.logic`, which holds
what the page computes (finding models, judging uploads, tables, downloads) without
Streamlit, so it can be tested and reused. The page reads its settings from the
environment, because ``streamlit run`` owns the command line: :func:`launch_command`
builds both for the ``app`` command.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

APP_SCRIPT = Path(__file__).resolve().with_name("streamlit_app.py")
MODELS_ENV = "DEEPFAKE_DETECTOR_MODELS"
MAX_UPLOAD_ENV = "DEEPFAKE_DETECTOR_MAX_UPLOAD_MB"
DEFAULT_MAX_UPLOAD_MB = 200


def launch_command(
    port: int | None = None, models: str | os.PathLike[str] | None = None, max_upload_mb: int = DEFAULT_MAX_UPLOAD_MB
) -> tuple[list[str], dict[str, str]]:
    """The ``streamlit run`` command line for the page, and the environment to run it in.

    Streamlit's own upload cap is set to the page's, so an oversized file gets the page's
    message; usage statistics are off, since the page makes no call outside the machine.
    """
    command = [sys.executable, "-m", "streamlit", "run", str(APP_SCRIPT)]
    command += ["--server.headless", "true", "--browser.gatherUsageStats", "false", "--client.toolbarMode", "viewer"]
    command += ["--server.maxUploadSize", str(max_upload_mb)]
    if port is not None:
        command += ["--server.port", str(port)]
    env = dict(os.environ)
    env[MAX_UPLOAD_ENV] = str(max_upload_mb)
    if models is not None:
        env[MODELS_ENV] = str(Path(models).resolve())
    return command, env
