"""Train the ride-duration model on NYC TLC green-taxi data (``python train.py --help``).

The logic lives in :mod:`ride_duration.jobs.train`; this file keeps the course's entry point.
"""

import sys

from ride_duration.jobs.train import main

if __name__ == "__main__":
    sys.exit(main())
