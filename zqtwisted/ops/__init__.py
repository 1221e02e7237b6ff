"""Operations: stats files, checks, metrics, health, logs, Sentry, top."""
