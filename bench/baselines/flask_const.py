"""Floor: the cheapest Flask app with the same request shape (``get_json`` + ``jsonify``)."""

from __future__ import annotations

from flask import Flask, jsonify, request

app = Flask("flask-constant")


@app.post("/predict")
def predict():
    request.get_json()
    return jsonify({"duration": 12.5, "model_version": "constant"})


@app.get("/health")
def health():
    return jsonify({"status": "ok"})
