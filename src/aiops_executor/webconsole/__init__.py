"""The web console: a single-page app served by the service itself under ``/console/`` (contract: Web console).

The browser code (``static/``) is plain ES modules, no build step; its third-party libraries are vendored npm
packages (``static/vendor``, see ``webconsole/vendor.py`` at the repository root).
"""
