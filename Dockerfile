# One image for the api, the worker and the participants; the command picks the process.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY orchestrator ./orchestrator
COPY participants ./participants
COPY migrations ./migrations
RUN pip install --no-cache-dir -e . && useradd --system saga
USER saga
ENV SAGA_API_HOST=0.0.0.0
EXPOSE 8000
CMD ["orchestrator", "api"]
