from setuptools import find_namespace_packages, setup

setup(
    name="zqtwisted",
    version="0.1.0",
    description="Zulip's RabbitMQ queue workers on one Twisted reactor",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.11",
    # Namespace discovery so that template folders ship as package data.
    packages=find_namespace_packages(include=["zqtwisted", "zqtwisted.*"]) + ["twisted.plugins"],
    # The dashboard's page and assets (zqtwisted/ops/web/static) ship in the package: no CDN.
    package_data={"": ["py.typed", "*.txt", "*.html", "*.md", "*.css", "*.js", "*.svg"]},
    install_requires=[
        "twisted[tls]>=24.7",
        "pika>=1.4.3,<2",
        "treq>=24.9",
        "txaio>=23.1",
        "sentry-sdk>=2.0",
        "prometheus-client>=0.20",
        "Jinja2>=3.1",
    ],
    extras_require={
        "postgres": ["psycopg2-binary>=2.9"],
        # Zulip mode ([zulip] database): Zulip's PostgreSQL, push and email content from HTML, E2EE push,
        # the CSS of Zulip's email templates inlined as Zulip does.
        "zulip": ["psycopg2-binary>=2.9", "lxml>=5", "PyNaCl>=1.5", "css-inline>=0.14"],
        "test": [
            "pytest>=8",
            "pytest-twisted>=1.14",
            "hypothesis>=6",
            "aiosmtpd>=1.4",
            "mypy>=1.10",
            "mypy-zope>=1.0",
            "ruff>=0.5",
            "coverage>=7",
            # The dashboard's browser test drives Debian's chromium through chromium-driver.
            "selenium>=4.20",
        ],
    },
    entry_points={"console_scripts": ["zqctl = zqtwisted.cli.zqctl:main"]},
    zip_safe=False,
)
