"""The REST API, versioned under /v1 and compatible with Annif's, and the web
demo at /, as a Flask app.

    from indexer.rest import create_app
    app = create_app("projects.cfg", api_key="secret")

`indexer serve` runs it under waitress. The modules: app (the Flask app,
problem+json errors, headers, the web page, CORS), server (waitress, worker
processes), api (the /v1 endpoints), schemas (every request and response as a
pydantic model), input (reading requests into those models), openapi (the
document generated from them), served (access levels and model hot reload).
"""

from indexer.rest.app import create_app, problem
from indexer.rest.server import make_server, run

__all__ = ["create_app", "make_server", "problem", "run"]
