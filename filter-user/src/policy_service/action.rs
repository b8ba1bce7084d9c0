//! From mxscreen's answer to a Postfix access(5) action.

use std::net::IpAddr;

use crate::query::{Answer, Told};

/// The action Postfix is told for a client at `ip` about which mxscreen answered `a`, for
/// mail to `recipient` (absent before RCPT); `limit_action` is `policy_service.limit_action`.
/// Mail to postmaster is never refused for a listing (RFC 5321 4.5.1): the one way a wrongly
/// listed sender's operator can reach this site's.
pub fn action_for(a: &Answer, ip: IpAddr, recipient: Option<&str>, limit_action: &str) -> String {
    let host = format!("Service unavailable; Client host [{ip}]");
    match a.action {
        Told::Drop if recipient.is_some_and(is_postmaster) => "DUNNO".to_owned(),
        Told::Drop => match &a.listing {
            Some(l) => {
                let label = if l.label.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", l.label)
                };
                let text = if l.text.is_empty() {
                    String::new()
                } else {
                    format!("; {}", one_line(&l.text))
                };
                format!(
                    "554 5.7.1 {host} blocked using {}, code {}{label}{text}",
                    l.zone, l.code
                )
            }
            None => {
                let score = a.score.map(|s| format!(" (score {s})")).unwrap_or_default();
                format!("554 5.7.1 {host} blocked by its DNS reputation{score}")
            }
        },
        Told::Block => format!("554 5.7.1 {host} blocked by local policy"),
        Told::Limit => limit_action.to_owned(),
        Told::Pass | Told::Allow | Told::Unknown => "DUNNO".to_owned(),
    }
}

/// `postmaster` or `postmaster@any.domain`, in any case (RFC 5321 4.5.1).
fn is_postmaster(recipient: &str) -> bool {
    let local = recipient.rsplit_once('@').map_or(recipient, |(l, _)| l);
    local.eq_ignore_ascii_case("postmaster")
}

/// Text from a DNSBL's TXT record, safe inside one SMTP reply line.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::reputation::Listing;

    #[test]
    fn each_answer_maps_to_its_action() {
        let ip: IpAddr = "192.0.2.20".parse().unwrap();
        let listing = Listing {
            zone: "zen.test".into(),
            code: Ipv4Addr::new(127, 0, 0, 2),
            label: "SBL".into(),
            text: "spam\nsource".into(),
        };
        let drop = Answer {
            action: Told::Drop,
            score: Some(15),
            listing: Some(listing),
            ..Answer::default()
        };
        assert_eq!(
            action_for(&drop, ip, None, "DUNNO"),
            "554 5.7.1 Service unavailable; Client host [192.0.2.20] blocked using zen.test, code 127.0.0.2 (SBL); spam source"
        );
        let bare = Answer {
            listing: None,
            ..drop
        };
        assert_eq!(
            action_for(&bare, ip, Some("user@example.org"), "DUNNO"),
            "554 5.7.1 Service unavailable; Client host [192.0.2.20] blocked by its DNS reputation (score 15)"
        );
        let told = |action| Answer {
            action,
            ..Answer::default()
        };
        assert!(
            action_for(
                &told(Told::Block),
                ip,
                Some("postmaster@example.org"),
                "DUNNO"
            )
            .starts_with("554 5.7.1 ")
        );
        assert_eq!(action_for(&told(Told::Limit), ip, None, "DUNNO"), "DUNNO");
        assert_eq!(
            action_for(&told(Told::Limit), ip, None, "SLEEP 5"),
            "SLEEP 5"
        );
        for to in ["postmaster@example.org", "PostMaster", "postmaster"] {
            assert_eq!(action_for(&bare, ip, Some(to), "DUNNO"), "DUNNO", "{to}");
        }
        assert!(
            action_for(&bare, ip, Some("postmaster.x@example.org"), "DUNNO").starts_with("554")
        );
        for t in [Told::Pass, Told::Allow, Told::Unknown] {
            assert_eq!(action_for(&told(t), ip, None, "SLEEP 5"), "DUNNO");
        }
    }
}
