"""Start the dashboard: `python serve.py [streamlit options]` is `streamlit run app.py` with
Streamlit's old `pages/`-folder mode turned off before the first request.

With a `pages/` folder beside the entrypoint, a freshly started server runs the first request's
page without app.py (a deep link such as /results shows no sidebar, and Streamlit lists every file
in pages/ as a page) until some run of app.py has called `st.navigation`. Turning the flag off in
the server process before it serves anything removes that first-request state altogether
(`make app` and `make share` start the dashboard this way; a bare `streamlit run app.py` is
still handled by pages/common.ensure_navigation).

Shared (`GRAFT_VIEW_KEY` or `GRAFT_OWNER_KEY` set, as `graft share` does), it also puts
`pages.guard` around Streamlit's handlers: a session without a key gets the locked page and nothing
else (no uploads, no cache clearing), and a keyed session's uploads are bounded. Unshared, nothing
changes.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path


def main(argv: list[str]) -> None:
    from streamlit.runtime.pages_manager import PagesManager
    from streamlit.web import cli

    from pages import guard

    here = Path(__file__).resolve().parent
    os.chdir(here)  # .streamlit/config.toml lives here
    PagesManager.uses_pages_directory = False
    guard.install()
    sys.argv = ["streamlit", "run", str(here / "app.py"), *argv]
    cli.main()


if __name__ == "__main__":
    main(sys.argv[1:])
