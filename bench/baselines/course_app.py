"""The course-style service (mlops-zoomcamp 04-deployment/web-service): the baseline to beat.

Per request: ``request.get_json()``, build the feature dict, ``dv.transform`` +
``model.predict``, ``jsonify``. No validation. Same model file as the service.
An array body is answered as a batch so the 10,000-ride point can run here too.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

from flask import Flask, jsonify, request

MODEL_PATH = Path(os.environ.get("MODEL_PATH") or Path(__file__).resolve().parents[2] / "model" / "lin_reg.bin")

with open(MODEL_PATH, "rb") as f_in:
    dv, model = pickle.load(f_in)  # noqa: S301 - our own bundled model


def prepare_features(ride):
    return {"PU_DO": "%s_%s" % (ride["PULocationID"], ride["DOLocationID"]),  # noqa: UP031 - as the course
            "trip_distance": ride["trip_distance"]}


def predict(features):
    return model.predict(dv.transform(features))


app = Flask("duration-prediction")


@app.route("/predict", methods=["POST"])
def predict_endpoint():
    body = request.get_json()
    if isinstance(body, list):
        return jsonify({"durations": predict([prepare_features(r) for r in body]).tolist()})
    return jsonify({"duration": float(predict(prepare_features(body))[0])})


@app.route("/health")
def health():
    return jsonify({"status": "ok"})
