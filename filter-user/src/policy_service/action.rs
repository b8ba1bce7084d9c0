//! From mxscreen's answer to a Postfix access(5) action.

use std::net::IpAddr;

use crate::query::{Answer, Told};

/// The action Postfix is told for a client at `ip` about which mxscreen answered `a`;
/// `limit_action` is `policy_service.limit_action`.
pub fn action_for(a: &Answer, ip: IpAddr, limit_action: &str) -> String {
    let host = format!("Service unavailable; Client host [{ip}]");
    match a.action {
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
            action_for(&drop, ip, "DUNNO"),
            "554 5.7.1 Service unavailable; Client host [192.0.2.20] blocked using zen.test, code 127.0.0.2 (SBL); spam source"
        );
        let bare = Answer {
            listing: None,
            ..drop
        };
        assert_eq!(
            action_for(&bare, ip, "DUNNO"),
            "554 5.7.1 Service unavailable; Client host [192.0.2.20] blocked by its DNS reputation (score 15)"
        );
        let told = |action| Answer {
            action,
            ..Answer::default()
        };
        assert!(action_for(&told(Told::Block), ip, "DUNNO").starts_with("554 5.7.1 "));
        assert_eq!(action_for(&told(Told::Limit), ip, "DUNNO"), "DUNNO");
        assert_eq!(action_for(&told(Told::Limit), ip, "SLEEP 5"), "SLEEP 5");
        for t in [Told::Pass, Told::Allow, Told::Unknown] {
            assert_eq!(action_for(&told(t), ip, "SLEEP 5"), "DUNNO");
        }
    }
}
