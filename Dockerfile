# CUDA-capable image of scsena: `docker build -t scsena .` then
# `docker run --gpus all --rm scsena demo` (omit --gpus to run on the CPU).
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MLFLOW_DISABLE_TELEMETRY=true

WORKDIR /opt/scsena
COPY pyproject.toml README.md ./
COPY src ./src

# PyPI's default Linux torch wheel is the CUDA build; it runs on the CPU when no GPU is visible.
RUN pip install 'torch>=2.4' -e '.[mlflow]'

ENTRYPOINT ["scsena"]
CMD ["demo"]
