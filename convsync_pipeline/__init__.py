"""convsync: conversation logs in blob storage kept in sync with their AI analysis."""

from convsync_pipeline.settings import install_log_redaction

install_log_redaction()
