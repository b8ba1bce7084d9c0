//! [`Action`] and [`Reason`]: what the datapath does with a source, and why an entry exists.

/// What the datapath does with a subject SYN whose source has a verdict.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    Pass = 0,
    /// Token bucket per source: SYNs within rate and burst pass, the rest are dropped.
    Limit = 1,
    Drop = 2,
}

impl Action {
    pub const ALL: [Action; 3] = [Action::Pass, Action::Limit, Action::Drop];

    /// The action called `name` (the inverse of [`Action::name`]).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }

    /// Stable lower-case name for logs, `list` and JSON.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Limit => "limit",
            Self::Drop => "drop",
        }
    }

    /// The action the datapath applies for a stored byte: an unknown value passes.
    pub const fn from_u8_or_pass(v: u8) -> Self {
        match Self::from_u8(v) {
            Some(a) => a,
            None => Self::Pass,
        }
    }

    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::Pass),
            1 => Some(Self::Limit),
            2 => Some(Self::Drop),
            _ => None,
        }
    }
}

/// Why an entry is in a map. The datapath only uses it to count a feed's drops apart and to
/// explain reputation drops; it is stored so that `list`, `check` and the logs can say where
/// a decision came from.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reason {
    Unspecified = 0,
    /// An operator's `block` / `allow` command.
    Manual = 1,
    /// `lists.allow` / `lists.deny` in the config file.
    Config = 2,
    /// The reputation engine's score (DNSBL/DNSWL/rDNS evidence).
    Reputation = 3,
    /// DNS trouble: a short-lived pass so the peer is asked again soon.
    Tempfail = 4,
    /// A blocklist feed file.
    Feed = 5,
}

impl Reason {
    pub const ALL: [Reason; 6] = [
        Reason::Unspecified,
        Reason::Manual,
        Reason::Config,
        Reason::Reputation,
        Reason::Tempfail,
        Reason::Feed,
    ];

    /// The reason called `name` (the inverse of [`Reason::name`]).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.name() == name)
    }

    /// Stable lower-case name for logs, `list` and JSON.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified",
            Self::Manual => "manual",
            Self::Config => "config",
            Self::Reputation => "reputation",
            Self::Tempfail => "tempfail",
            Self::Feed => "feed",
        }
    }

    pub const fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Manual,
            2 => Self::Config,
            3 => Self::Reputation,
            4 => Self::Tempfail,
            5 => Self::Feed,
            _ => Self::Unspecified,
        }
    }
}

/// [`Action`] and [`Reason`] travel by their names (`"drop"`, `"manual"`), as `list --json`,
/// the logs and the control protocol show them.
#[cfg(feature = "user")]
mod names_serde {
    use core::{fmt, marker::PhantomData};

    use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

    use super::{Action, Reason};

    /// Reads a name into `T` through `from_name`, whether the string is borrowed or not.
    struct ByName<T>(fn(&str) -> Option<T>, &'static str, PhantomData<T>);

    impl<T> de::Visitor<'_> for ByName<T> {
        type Value = T;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.1)
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
            (self.0)(v).ok_or_else(|| E::invalid_value(de::Unexpected::Str(v), &self))
        }
    }

    impl Serialize for Action {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_str(self.name())
        }
    }

    impl<'de> Deserialize<'de> for Action {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_str(ByName(
                Action::from_name,
                "pass, limit or drop",
                PhantomData,
            ))
        }
    }

    impl Serialize for Reason {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_str(self.name())
        }
    }

    impl<'de> Deserialize<'de> for Reason {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_str(ByName(Reason::from_name, "a reason name", PhantomData))
        }
    }
}
