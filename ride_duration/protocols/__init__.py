"""The standard protocols the service also speaks, each a blueprint over the same core.

* :mod:`.mlflow_scoring`: MLflow's scoring server (``/invocations``, ``/ping``, ``/version``).
* :mod:`.v2`: the Open Inference Protocol V2 (KServe, Triton, MLServer clients) under ``/v2``.
* :mod:`.openapi`: ``/openapi.json`` (OpenAPI 3.1, built from the pydantic models) and ``/docs``.

Every prediction goes through :func:`ride_duration.service.predict_payload`: the same
validation (:func:`ride_duration.schemas.validate_rides`), batch limit and single model
call per request as ``POST /predict``. Only the envelope and the error shape differ.
"""
