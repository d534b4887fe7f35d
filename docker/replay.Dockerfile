# The replay client: streams real PhysioNet stays to a running service over HTTP. It needs the data
# reader (training.sepsis.data, pandas) and the contract (models/), not the service and not torch.
#   docker build -f docker/replay.Dockerfile -t sepsis-replay:cpu .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README* ./
COPY models ./models
COPY training ./training
RUN pip install ".[replay]" && useradd --create-home sepsis
USER sepsis
CMD ["python", "-m", "training.sepsis.replay", "--help"]
