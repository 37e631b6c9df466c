//! What a container's image is named by: a path on the agent, or a
//! Docker reference (`[registry/]repository[:tag][@digest]`).

use std::path::PathBuf;

/// The registry unqualified names come from, and the host Docker Hub's
/// API is served at.
pub const DOCKER_HUB: &str = "docker.io";
const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// Where an image is to be had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    /// An OCI image layout directory, or a `docker save` or OCI archive
    /// (a tar file), on the agent.
    Path(PathBuf),
    Registry(Reference),
}

/// A Docker image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// The registry's host (and port) as named (`docker.io` for Docker
    /// Hub).
    pub registry: String,
    /// The repository (`library/busybox` for Docker Hub's `busybox`).
    pub repository: String,
    /// A tag or a digest (`sha256:…`); `latest` when neither is given.
    pub reference: String,
}

impl Reference {
    /// The host whose registry API serves it.
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }

    /// Whether it names a manifest by digest (which is then checked).
    pub fn digest(&self) -> Option<&str> {
        self.reference
            .starts_with("sha256:")
            .then_some(self.reference.as_str())
    }

    /// Whether its registry is on this host's loopback: spoken to over
    /// plain HTTP, as Docker does for `localhost` registries.
    pub fn on_loopback(&self) -> bool {
        let host = match self.registry.rsplit_once(':') {
            Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
            _ => self.registry.as_str(),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|address| address.is_loopback())
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let separator = if self.digest().is_some() { '@' } else { ':' };
        write!(
            f,
            "{}/{}{separator}{}",
            self.registry, self.repository, self.reference
        )
    }
}

/// Reads what a container's `image` names: an absolute path, or a Docker
/// reference; an error says what is wrong with it.
pub fn parse(image: &str) -> Result<ImageSource, String> {
    if image.starts_with('/') {
        return Ok(ImageSource::Path(PathBuf::from(image)));
    }
    if image.is_empty() || image.len() > 1024 {
        return Err("an image reference is 1 to 1024 characters".into());
    }
    let (name, digest) = match image.split_once('@') {
        Some((name, digest)) => {
            let hex = digest
                .strip_prefix("sha256:")
                .ok_or_else(|| format!("{image:?}: only sha256 digests are supported"))?;
            if hex.len() != 64
                || !hex
                    .chars()
                    .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
            {
                return Err(format!(
                    "{image:?}: a sha256 digest is 64 lowercase hex digits"
                ));
            }
            (name, Some(digest))
        }
        None => (image, None),
    };
    // A tag follows the last colon after the last slash.
    let (name, tag) = match name.rsplit_once(':') {
        Some((before, tag)) if !tag.contains('/') => (before, Some(tag)),
        _ => (name, None),
    };
    if let Some(tag) = tag
        && (tag.is_empty()
            || tag.len() > 128
            || !tag
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Err(format!("{image:?}: {tag:?} is not a tag"));
    }
    let (registry, repository) = match name.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (first.to_owned(), rest.to_owned())
        }
        _ => (DOCKER_HUB.to_owned(), name.to_owned()),
    };
    let repository = if registry == DOCKER_HUB && !repository.contains('/') {
        format!("library/{repository}")
    } else {
        repository
    };
    let component_ok = |part: &str| {
        !part.is_empty()
            && part.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')
            })
            && part.starts_with(|c: char| c.is_ascii_alphanumeric())
    };
    if !repository.split('/').all(component_ok) {
        return Err(format!(
            "{image:?}: a repository is lowercase letters, digits and separators"
        ));
    }
    if !registry.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '[')
        || !registry
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
    {
        return Err(format!("{image:?}: {registry:?} is not a registry host"));
    }
    let reference = match (digest, tag) {
        (Some(digest), _) => digest.to_owned(),
        (None, Some(tag)) => tag.to_owned(),
        (None, None) => "latest".to_owned(),
    };
    Ok(ImageSource::Registry(Reference {
        registry,
        repository,
        reference,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(image: &str) -> Reference {
        match parse(image).unwrap() {
            ImageSource::Registry(reference) => reference,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn references_read_as_docker_reads_them() {
        let hub = registry("busybox");
        assert_eq!(
            (
                hub.registry.as_str(),
                hub.repository.as_str(),
                hub.reference.as_str()
            ),
            ("docker.io", "library/busybox", "latest")
        );
        assert_eq!(hub.api_host(), "registry-1.docker.io");
        let own = registry("127.0.0.1:5000/team/app:1.2");
        assert_eq!(
            (
                own.registry.as_str(),
                own.repository.as_str(),
                own.reference.as_str()
            ),
            ("127.0.0.1:5000", "team/app", "1.2")
        );
        assert!(own.on_loopback());
        let pinned = registry(&format!("localhost/app@sha256:{}", "a".repeat(64)));
        assert_eq!(
            pinned.digest(),
            Some(&*format!("sha256:{}", "a".repeat(64)))
        );
        assert!(pinned.on_loopback());
        assert!(!registry("quay.io/x/y").on_loopback());
        assert_eq!(
            parse("/var/images/app").unwrap(),
            ImageSource::Path("/var/images/app".into())
        );
    }

    #[test]
    fn bad_references_are_refused_with_a_reason() {
        for bad in [
            "",
            "Busybox",
            "busybox:",
            "busybox:a b",
            "busybox@md5:00",
            "busybox@sha256:abc",
            "../x",
            "host:5000/../x",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
