"""Benchmarks: serving arms side by side (`bench`, with its `naive` and `ray_serve`
baselines and CPU per stage, `stage_cpu`), retrieval and search at catalog scale
(`retrieval_scale`, `search_scale`), the client's overhead (`client_overhead`), ONNX
Runtime's spinning threads against sleeping ones (`spinning_ab`) and our sweep against Model
Analyzer (`model_analyzer`)."""
