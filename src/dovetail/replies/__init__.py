"""The replies engine: threads inbound replies to outbound campaign messages, classifies them,
extracts the new text and fires signed webhooks through a durable outbox.

Entry points: :class:`~dovetail.replies.service.RepliesService` (registry, pipeline, outbox,
queries on one engine), :class:`~dovetail.replies.runner.RepliesEngine` (the ``replies`` service:
webhook dispatcher and IMAP sources), :class:`~dovetail.replies.sources.local.LocalHook` (called by
the Maildir delivery agent), :class:`~dovetail.replies.outbound_bridge.OutboundBridge` (outbound's
registry, event sink and suppression list), ``api.router`` (REST) and ``cli.register`` (CLI verbs).
"""
