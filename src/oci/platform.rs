//! Platforms (`linux/amd64`, `linux/arm64/v8`) and picking this machine's entry from an index.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::manifest::Descriptor;

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// The platform of the machine `dev` runs on, in OCI terms.
    pub fn host() -> Self {
        let (arch, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", Some("v8")),
            "arm" => ("arm", Some("v7")),
            "x86" => ("386", None),
            "powerpc64" => ("ppc64le", None),
            other => (other, None),
        };
        Platform {
            architecture: arch.to_string(),
            os: "linux".to_string(),
            variant: variant.map(str::to_string),
        }
    }

    /// Whether an index entry for `other` runs here. A missing variant matches any.
    pub fn accepts(&self, other: &Platform) -> bool {
        self.os == other.os
            && self.architecture == other.architecture
            && match (&self.variant, &other.variant) {
                (Some(a), Some(b)) => a == b || (self.architecture == "arm64" && b == "v8"),
                _ => true,
            }
    }

    /// Picks the manifest for this platform from an index; attestation entries
    /// (`unknown/unknown`) never match. An exact variant wins over a missing one.
    pub fn choose<'a>(
        &self,
        manifests: impl IntoIterator<Item = &'a Descriptor>,
    ) -> Option<&'a Descriptor> {
        let candidates = manifests
            .into_iter()
            .filter(|d| d.platform.as_ref().is_some_and(|p| self.accepts(p)));
        let mut best = None;
        for d in candidates {
            let exact = d
                .platform
                .as_ref()
                .is_some_and(|p| p.variant == self.variant);
            if exact {
                return Some(d);
            }
            best.get_or_insert(d);
        }
        best
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::Digest;

    fn desc(n: u8, os: &str, arch: &str, variant: Option<&str>) -> Descriptor {
        Descriptor {
            media_type: String::new(),
            digest: Digest::parse(&format!("sha256:{}", (n as char).to_string().repeat(64)))
                .unwrap(),
            size: 1,
            platform: Some(Platform {
                os: os.into(),
                architecture: arch.into(),
                variant: variant.map(Into::into),
            }),
            annotations: None,
            urls: None,
        }
    }

    #[test]
    fn skips_attestations_and_takes_the_last_matching_arch() {
        let amd = Platform {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
        };
        let list = [
            desc(b'1', "unknown", "unknown", None),
            desc(b'2', "linux", "arm64", Some("v8")),
            desc(b'3', "linux", "amd64", None),
        ];
        assert_eq!(amd.choose(&list).unwrap().digest, list[2].digest);
        let arm = Platform {
            os: "linux".into(),
            architecture: "arm64".into(),
            variant: Some("v8".into()),
        };
        assert_eq!(arm.choose(&list).unwrap().digest, list[1].digest);
        let s390 = Platform {
            os: "linux".into(),
            architecture: "s390x".into(),
            variant: None,
        };
        assert!(s390.choose(&list).is_none());
    }
}
