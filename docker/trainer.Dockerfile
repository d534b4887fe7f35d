# Training and export on an NVIDIA GPU (PyTorch CUDA wheels bring their own CUDA libraries).
#   docker build -f docker/trainer.Dockerfile -t sepsis-trainer .
#   docker run --gpus all -v $PWD/../shared/data:/data:ro -v $PWD/results:/app/results sepsis-trainer \
#       python -m training sepsis train --data /data/physionet2019/physionet2019_dev.tar.xz
FROM nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv git && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /app
COPY pyproject.toml README* ./
COPY models ./models
COPY training ./training
RUN pip install "torch>=2.2" && pip install ".[train]"
CMD ["python", "-m", "training", "--help"]
