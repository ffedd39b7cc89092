"""Packaging for poex_http: one module, no runtime dependencies."""
import os
import re

from setuptools import setup

HERE = os.path.dirname(os.path.abspath(__file__))

with open(os.path.join(HERE, "poex_http.py"), encoding="utf-8") as module:
    VERSION = re.search(r'^__version__ = "([^"]+)"', module.read(), re.M).group(1)
with open(os.path.join(HERE, "README.rst"), encoding="utf-8") as readme:
    LONG_DESCRIPTION = readme.read()

setup(
    name="poex_http",
    version=VERSION,
    description="A single-file, zero-dependency HTTP/1.1 server: regex handlers, "
                "keep-alive, streaming, static files, WSGI",
    long_description=LONG_DESCRIPTION,
    long_description_content_type="text/x-rst",
    license="Artistic-1.0-Perl OR GPL-1.0-or-later",
    py_modules=["poex_http"],
    python_requires=">=3.8",
    extras_require={"test": ["pytest", "coverage"]},
    entry_points={"console_scripts": ["poex_http = poex_http:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3 :: Only",
        "Topic :: Internet :: WWW/HTTP :: HTTP Servers",
        "Topic :: Internet :: WWW/HTTP :: WSGI :: Server",
        "Operating System :: POSIX",
    ],
)
