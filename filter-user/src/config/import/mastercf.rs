//! Postfix's master.cf (master(5)), for the `-o name=value` overrides of postscreen's
//! service: a postscreen run with `-o postscreen_dnsbl_threshold=8` scores against 8, whatever
//! main.cf says. mxscreen screens port 25 (`datapath.ports`), so the overrides of the
//! postscreen listening there are what its connections get: they are honoured, as if set in
//! main.cf, each named in a note. Those of a postscreen on another port, or of several
//! port-25 postscreens that could each differ, cannot be one mxscreen policy: noted, not
//! translated. A master.cf that runs no postscreen on port 25 is said too: then none of
//! postscreen's settings screens port 25.

use super::{
    draft::Notes,
    maincf::{MainCf, Setting},
};

/// The service types of master.cf's second field.
const TYPES: &[&str] = &["inet", "unix", "unix-dgram", "fifo", "pass"];

/// One master.cf service: its name (`smtp`, `192.0.2.1:25`), type, command and the
/// `-o` overrides its command takes, each with its line.
#[derive(Debug, PartialEq)]
struct Service {
    name: String,
    kind: String,
    command: String,
    overrides: Vec<(String, String, String)>,
}

/// Whether `text` is a master.cf: a service line (`smtp inet n - y - 1 postscreen`), which
/// no main.cf line can be (the second word of those is `=`).
pub fn is_master_cf(text: &str) -> bool {
    text.lines().any(|l| service_line(l).is_some())
}

/// The fields of a service line (a line starting a service), if it is one.
fn service_line(line: &str) -> Option<Vec<&str>> {
    if line.starts_with([' ', '\t', '#']) {
        return None;
    }
    let fields: Vec<&str> = line.split_whitespace().collect();
    (fields.len() >= 8 && TYPES.contains(&fields[1]) && !fields[0].contains('=')).then_some(fields)
}

/// The services of a master.cf, continuation lines (starting with white space) joined.
fn services(file: &str, text: &str) -> Vec<Service> {
    let mut out: Vec<Service> = Vec::new();
    let mut in_service = false;
    for (i, line) in text.lines().enumerate() {
        let at = format!("{file}:{}", i + 1);
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let args: Vec<String> = if let Some(f) = service_line(line) {
            out.push(Service {
                name: f[0].to_owned(),
                kind: f[1].to_owned(),
                command: f[7].to_owned(),
                overrides: Vec::new(),
            });
            in_service = true;
            words(&f[8..].join(" "))
        } else if line.starts_with([' ', '\t']) && in_service {
            words(t)
        } else {
            in_service = false;
            continue;
        };
        let s = out.last_mut().expect("a service was pushed");
        let mut args = args.into_iter();
        while let Some(a) = args.next() {
            let o = match a.strip_prefix("-o") {
                Some("") => args.next().unwrap_or_default(),
                Some(joined) => joined.to_owned(),
                None => continue,
            };
            let o = o.trim_start_matches('{').trim_end_matches('}');
            if let Some((name, value)) = o.split_once('=') {
                s.overrides
                    .push((name.trim().to_owned(), value.trim().to_owned(), at.clone()));
            }
        }
    }
    out
}

/// Words of a command line, `{ ... }` kept as one (master(5): a value with spaces).
fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text.trim_start();
    while !rest.is_empty() {
        let end = if rest.starts_with('{') {
            rest.find('}').map_or(rest.len(), |e| e + 1)
        } else {
            rest.find(char::is_whitespace).unwrap_or(rest.len())
        };
        out.push(rest[..end].to_owned());
        rest = rest[end..].trim_start();
    }
    out
}

/// Whether a service name listens on port 25 (`smtp`, `25`, `192.0.2.1:smtp`).
fn port_25(name: &str) -> bool {
    matches!(name.rsplit(':').next(), Some("smtp" | "25"))
}

/// Applies the overrides of master.cf `file` (`text`) to `cf` as module comment says.
pub fn apply(file: &str, text: &str, cf: &mut MainCf, notes: &mut Notes) {
    let postscreens: Vec<Service> = services(file, text)
        .into_iter()
        .filter(|s| s.kind == "inet" && s.command == "postscreen")
        .collect();
    let on_25: Vec<&Service> = postscreens.iter().filter(|s| port_25(&s.name)).collect();
    if on_25.is_empty() {
        notes.push(file, "master.cf", "runs no postscreen on port 25 (smtp), the port mxscreen screens: postscreen's settings translated here screen no connection there");
    }
    let differ = on_25.windows(2).any(|w| w[0].overrides != w[1].overrides);
    for s in &postscreens {
        for (name, value, at) in &s.overrides {
            let what = format!("{} -o {name}={value}", s.name);
            if !port_25(&s.name) {
                notes.push(
                    at,
                    what,
                    "an override of a postscreen on another port than 25; not translated",
                );
            } else if differ {
                notes.push(at, what, "the postscreens on port 25 override main.cf differently, and mxscreen has one policy for all; not translated");
            } else {
                notes.push(
                    at,
                    what,
                    "an override of the port-25 postscreen: translated in place of main.cf's value",
                );
                let lines = vec![(at.clone(), value.clone())];
                cf.set(
                    name,
                    Setting {
                        value: value.clone(),
                        at: at.clone(),
                        lines,
                    },
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_and_their_overrides() {
        let text = "# comment\nsmtp      inet  n       -       y       -       1       postscreen\n  \
                    -o postscreen_dnsbl_threshold=8\n  # inside\n  -o { postscreen_dnsbl_sites = a.example*2 b.example }\n\
                    smtpd     pass  -       -       y       -       -       smtpd -o smtpd_tls_security_level=may\n\
                    submission inet n       -       y       -       -       smtpd\n  -o syslog_name=postfix/submission\n";
        assert!(is_master_cf(text));
        assert!(!is_master_cf(
            "smtp = inet n - y - 1 postscreen x\nname = value\n"
        ));
        let s = services("master.cf", text);
        assert_eq!(s.len(), 3);
        assert_eq!(
            s[0].overrides,
            [
                (
                    "postscreen_dnsbl_threshold".into(),
                    "8".into(),
                    "master.cf:3".into()
                ),
                (
                    "postscreen_dnsbl_sites".into(),
                    "a.example*2 b.example".into(),
                    "master.cf:5".into()
                ),
            ]
        );
        assert_eq!(s[1].overrides[0].0, "smtpd_tls_security_level");
        assert_eq!(s[2].overrides[0].2, "master.cf:8");
        assert!(port_25("smtp") && port_25("192.0.2.1:25") && !port_25("2525"));
    }
}
