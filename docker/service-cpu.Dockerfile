# The monitoring service on CPU (onnxruntime CPU build). Build from the repository root:
#   docker build -f docker/service-cpu.Dockerfile -t sepsis-service:cpu .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README* ./
COPY models ./models
COPY service ./service
RUN pip install ".[serve]" && useradd --create-home sepsis && mkdir -p /var/lib/sepsis && chown sepsis /var/lib/sepsis
USER sepsis
ENV SEPSIS_DB_URL=sqlite:////var/lib/sepsis/service.db SEPSIS_HOST=0.0.0.0 SEPSIS_PORT=8000 SEPSIS_DEVICE=cpu
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/ready').status != 200)"
CMD ["python", "-m", "service", "--host", "0.0.0.0", "--port", "8000"]
