# The farm's image: every Ray pod (head, coordinator, GPU workers, the RayJob's submitter) runs it, so Ray,
# Python and the engines are the same everywhere. UNVERIFIED: never built here (no Docker engine); see
# docs/deployment.md.
#
#   docker build -t registry.example.com/helium/helium-cluster:0.1.0 .
#
# Ray's official GPU image, pinned: its Ray must equal k8s/base/raycluster.yaml's rayVersion, and its
# Python (3.11) the project's. It runs as the non-root user ray (uid 1000, gid 100).
FROM rayproject/ray:2.60.0-py311-gpu

# The vLLM of the card models: the runtime tag "vllm-<version>-batch-invariant" is part of every card
# model key, and the k8s overlays' card resources were computed with it (k8s/card-resource.py).
# Changing it changes the card models: recompute the overlays' resources (tests/deploy checks them).
ARG VLLM_VERSION=0.33.0

# The shared model cache (PVC helium-model-cache, the rigs' model_cache_dir) and Hugging Face's own files.
ENV HELIUM_MODEL_CACHE=/mnt/helium-models \
    HF_HOME=/mnt/helium-models/hf \
    PYTHONUNBUFFERED=1

WORKDIR /home/ray/helium-cluster

# Only what the package needs: no tests, no local state, no keys (see also .dockerignore).
COPY --chown=ray:users pyproject.toml README.md ./
COPY --chown=ray:users cluster ./cluster
COPY --chown=ray:users network ./network
COPY --chown=ray:users conf ./conf

# Editable: `python -m cluster` finds its Hydra tree at <repository>/conf, beside the package.
# Ray stays the image's own (every pod must run the same Ray); vLLM brings its CUDA torch.
RUN pip install --no-cache-dir -e ".[gpu]" "vllm==${VLLM_VERSION}" "ray[default]==2.60.0" \
    && python -c "import cluster, vllm, pynvml; print('vllm', vllm.__version__)"

USER ray
