"""Auto-interpretability: examples by activation quantile, explainers, scorers, ROC with bootstrap bands.

Modules: `examples` (windows, sparse latent activations, sampling, synthetic rule latents), `prompts`
(every prompt text), `llm` (hf-local / openai-compatible backends with a per-call disk cache),
`explainers` (llm, top-tokens baseline), `scorers` (detection, fuzzing, embedding), `roc` (pooled and
per-latent AUROC, bootstrap band), `pipeline` (examples -> explanation -> scores, cached).
"""
