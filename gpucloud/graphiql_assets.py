"""Which files of which pinned npm packages the GraphiQL page uses, and how they are vendored.

The app serves GraphiQL from files copied into the Python package (gpucloud/static/graphiql/),
so production needs neither node nor the internet. `make graphiql-assets` copies them from
node_modules (installed by `make node` exactly as package-lock.json pins them); the suite checks
that the copies are byte-identical to the pinned package's files.

Run as `python -m gpucloud.graphiql_assets [NODE_MODULES]`.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

STATIC_DIR = Path(__file__).resolve().parent / "static" / "graphiql"


@dataclass(frozen=True)
class Vendored:
    name: str  # the file's name under static/graphiql/ and in its URL
    package: str  # the npm package, pinned in package.json
    version: str  # ... at this version
    path: str  # the file inside the package

    def source(self, node_modules: Path) -> Path:
        return node_modules / self.package / self.path


# In load order: GraphiQL's UMD build needs React and ReactDOM as globals, and the explorer
# plugin needs GraphiQL's.
SCRIPTS = (
    Vendored("react.production.min.js", "react", "18.2.0", "umd/react.production.min.js"),
    Vendored(
        "react-dom.production.min.js", "react-dom", "18.2.0", "umd/react-dom.production.min.js"
    ),
    Vendored("graphiql.min.js", "graphiql", "3.8.3", "graphiql.min.js"),
    Vendored("plugin-explorer.umd.js", "@graphiql/plugin-explorer", "1.0.2", "dist/index.umd.js"),
)
STYLES = (
    Vendored("graphiql.min.css", "graphiql", "3.8.3", "graphiql.min.css"),
    Vendored("plugin-explorer.css", "@graphiql/plugin-explorer", "1.0.2", "dist/style.css"),
)
# Shipped beside the code they license (the explorer's package carries no LICENSE file; its
# package.json says MIT).
LICENSES = (
    Vendored("LICENSE.react", "react", "18.2.0", "LICENSE"),
    Vendored("LICENSE.react-dom", "react-dom", "18.2.0", "LICENSE"),
    Vendored("LICENSE.graphiql", "graphiql", "3.8.3", "LICENSE"),
)
VENDORED = SCRIPTS + STYLES + LICENSES
# Ours, not copied: the page's styles and the bootstrap script (the page allows no inline script).
OWN_STYLE = "graphiql-page.css"
OWN_SCRIPT = "graphiql-bootstrap.js"


def vendor(node_modules: Path, target: Path = STATIC_DIR) -> list[Path]:
    """Copy every vendored file from node_modules into `target`; returns the files written."""
    written = []
    for item in VENDORED:
        manifest = json.loads((node_modules / item.package / "package.json").read_text())
        if manifest["version"] != item.version:
            raise SystemExit(
                f"{item.package} in {node_modules} is {manifest['version']}, expected "
                f"{item.version}: run `make node`"
            )
        destination = target / item.name
        shutil.copyfile(item.source(node_modules), destination)
        written.append(destination)
    return written


if __name__ == "__main__":
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("node_modules")
    for path in vendor(root):
        print(path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path)
