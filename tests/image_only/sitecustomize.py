"""Makes a test's service interpreter see only the packages the service image installs.

``tests.support.Server`` puts this directory first on the service's ``PYTHONPATH`` and names, in
``RIDE_DURATION_IMAGE_SITE``, a site-packages directory holding only Pipfile.lock's runtime
distributions (symlinks into the venv: ``tests.support.image_site``). This file puts that directory
where the venv's site-packages was on ``sys.path``, so pandas, pyarrow, sqlalchemy, boto3, full
``mlflow`` and the other development packages are missing exactly as in the image: ``import`` raises
``ModuleNotFoundError``, ``importlib.util.find_spec`` gives None and ``importlib.metadata`` does not
list them. A library that probes for an optional package (scikit-learn for pandas, MLflow for
sqlalchemy and for ``mlflow`` beside ``mlflow-skinny``) takes the image's branch, and a serving path
that needs a development package fails here as it would there.
"""

import os
import sys
import sysconfig

_image_site = os.environ.get("RIDE_DURATION_IMAGE_SITE")
if _image_site:
    _venv_site = {os.path.realpath(sysconfig.get_paths()[key]) for key in ("purelib", "platlib")}
    sys.path[:] = [_image_site if os.path.realpath(entry) in _venv_site else entry for entry in sys.path]
