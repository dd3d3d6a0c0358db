// Placeholder: replaced by the Dovecot/clamd harness (checks that the real servers are installed).
export default function setup(): void {}
