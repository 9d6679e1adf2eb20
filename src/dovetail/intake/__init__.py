"""Policy between the SMTP engine and the queue: who may send what to whom (Postfix's smtpd restrictions)."""
