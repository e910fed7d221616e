"""Package layout that pyproject.toml cannot express: the repository's web/
directory is installed as the package data `indexer/web`, so an installed wheel
serves the web page. Everything else is declared in pyproject.toml."""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["indexer*", "backends*"]), "indexer.web"],
    package_dir={"indexer.web": "web"},
    package_data={"indexer.web": ["*.html", "*.js", "*.css", "*.svg"]},
)
