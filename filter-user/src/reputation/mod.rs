//! Reputation engine: rDNS, FCrDNS, DNSBL/DNSWL (RFC 5782) into verdicts.
