# The monitoring service on an NVIDIA GPU: CUDA 12 + cuDNN 9 runtime and onnxruntime-gpu, serving on
# the CUDA execution provider with micro-batching (/ready says so). Measured on an H200, this gains
# nothing per request over the CPU provider (results/gpu/h200-2026-12-01); the GPU pays off for
# whole-ward rescoring. SEPSIS_DEVICE=auto serves on the CPU provider.
#   docker build -f docker/service-gpu.Dockerfile -t sepsis-service:gpu .
#   docker run --gpus all -p 8000:8000 sepsis-service:gpu
FROM nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /app
COPY pyproject.toml README* ./
COPY models ./models
COPY service ./service
# The CPU and GPU builds of onnxruntime install the same module: keep only the GPU one.
RUN pip install ".[serve]" && pip uninstall -y onnxruntime && pip install "onnxruntime-gpu>=1.20" \
    && useradd --create-home sepsis && mkdir -p /var/lib/sepsis && chown sepsis /var/lib/sepsis
USER sepsis
ENV SEPSIS_DB_URL=sqlite:////var/lib/sepsis/service.db SEPSIS_HOST=0.0.0.0 SEPSIS_PORT=8000 SEPSIS_DEVICE=cuda
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/ready').status != 200)"
CMD ["python", "-m", "service", "--host", "0.0.0.0", "--port", "8000"]
