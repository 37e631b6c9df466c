//! Authorization: who may do what, by access control lists in Apache
//! Mesos's JSON vocabulary, decided as Mesos's local authorizer decides.
//!
//! Certificates say who a peer is; these lists say what that principal
//! may do: register frameworks in a role, run tasks as a user, tear down
//! another principal's framework, see frameworks and tasks. An operator
//! who wrote ACLs for Mesos can hand the same file to `strata master
//! --acls`.
//!
//! The rules of an action are tried in order; the first whose subject and
//! object both match the request decides, and it allows only if neither
//! names `NONE`. When no rule applies, the file's `permissive` decides, or
//! the master's default when the file does not say. A file is refused
//! whole if anything in it is unknown: a misspelt action would otherwise
//! leave its requests to the default, which is usually "allow".
//!
//! Deciding is pure; only [`load`] touches the disk, so the master's
//! books can carry an [`Authorizer`] and stay free of IO.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;

/// Largest ACL file [`load`] reads. ACLs are a few rules per team; a file
/// larger than this is refused before it is read.
pub const MAX_ACLS_BYTES: u64 = 1024 * 1024;

/// Why an ACL file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AclsError {
    #[error("cannot read the acls file {}: {cause}", .path.display())]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("the acls file {} is not valid: {reason}", .path.display())]
    InvalidFile { path: PathBuf, reason: String },
    #[error("the acls are not valid: {reason}")]
    Invalid { reason: String },
}

/// Reads and parses the ACL file at `path` (at most [`MAX_ACLS_BYTES`]).
pub fn load(path: &Path) -> Result<Acls, AclsError> {
    let bytes = strata_runtime::durable::read_bounded(path, MAX_ACLS_BYTES).map_err(|cause| {
        AclsError::Read {
            path: path.to_owned(),
            cause,
        }
    })?;
    Acls::parse(&bytes).map_err(|error| match error {
        AclsError::Invalid { reason } => AclsError::InvalidFile {
            path: path.to_owned(),
            reason,
        },
        other => other,
    })
}

/// The actions ACLs govern, named by their key in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    /// A principal registers a framework in a role.
    RegisterFrameworks,
    /// A framework's principal runs a task as a user.
    RunTasks,
    /// A principal tears down a framework of another principal.
    TeardownFrameworks,
    /// A principal sees a framework that runs as a user.
    ViewFrameworks,
    /// A principal sees a task that runs as a user.
    ViewTasks,
    /// A principal marks an agent gone (the rules' objects are agent
    /// ids, `agents` in the file).
    MarkAgentsGone,
}

impl Action {
    pub const ALL: [Action; 6] = [
        Action::RegisterFrameworks,
        Action::RunTasks,
        Action::TeardownFrameworks,
        Action::ViewFrameworks,
        Action::ViewTasks,
        Action::MarkAgentsGone,
    ];

    /// The action's key in the file.
    pub fn key(self) -> &'static str {
        match self {
            Action::RegisterFrameworks => "register_frameworks",
            Action::RunTasks => "run_tasks",
            Action::TeardownFrameworks => "teardown_frameworks",
            Action::ViewFrameworks => "view_frameworks",
            Action::ViewTasks => "view_tasks",
            Action::MarkAgentsGone => "mark_agents_gone",
        }
    }

    /// The key of what the action is done to, in its rules.
    pub fn object_key(self) -> &'static str {
        match self {
            Action::RegisterFrameworks => "roles",
            Action::RunTasks | Action::ViewFrameworks | Action::ViewTasks => "users",
            Action::TeardownFrameworks => "framework_principals",
            Action::MarkAgentsGone => "agents",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

/// Who or what a rule is about: `{"type": "ANY"}`, `{"type": "NONE"}` or
/// `{"values": [...]}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "EntityFile")]
pub enum Entity {
    /// Everyone; the rule applies to all and may allow.
    Any,
    /// No one; the rule applies to all and denies.
    None,
    /// Exactly these; the rule applies to them and may allow.
    Values(Vec<String>),
}

impl Entity {
    /// Whether a rule with this entity applies to `value`. A request
    /// without a value (a principal-less one) is matched by `ANY` only.
    fn matches(&self, value: Option<&str>) -> bool {
        match (self, value) {
            (Entity::Any, _) => true,
            (_, None) => false,
            (Entity::None, Some(_)) => true,
            (Entity::Values(values), Some(value)) => values.iter().any(|v| v == value),
        }
    }

    /// Whether a rule with this entity, once it applies, may allow.
    fn allows(&self) -> bool {
        !matches!(self, Entity::None)
    }
}

impl fmt::Display for Entity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Entity::Any => f.write_str("ANY"),
            Entity::None => f.write_str("NONE"),
            Entity::Values(values) => write!(f, "{values:?}"),
        }
    }
}

/// An entity as written, checked into an [`Entity`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EntityFile {
    #[serde(rename = "type")]
    kind: Option<EntityType>,
    values: Option<Vec<String>>,
}

#[derive(Deserialize)]
enum EntityType {
    #[serde(rename = "ANY")]
    Any,
    #[serde(rename = "NONE")]
    None,
    #[serde(rename = "SOME")]
    Some,
}

impl TryFrom<EntityFile> for Entity {
    type Error = String;

    fn try_from(file: EntityFile) -> Result<Entity, String> {
        let values = file.values.filter(|values| !values.is_empty());
        match (file.kind, values) {
            (Some(EntityType::Any), None) => Ok(Entity::Any),
            (Some(EntityType::None), None) => Ok(Entity::None),
            (Some(EntityType::Any | EntityType::None), Some(values)) => Err(format!(
                "an entity of type ANY or NONE takes no values, but {values:?} are given"
            )),
            (Some(EntityType::Some) | None, Some(values)) => Ok(Entity::Values(values)),
            (Some(EntityType::Some) | None, None) => Err(
                "an entity needs values, or a type of ANY or NONE; an empty one would match no one"
                    .into(),
            ),
        }
    }
}

/// One rule of an action: whom it is about and what they do it to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// `principals` in the file.
    pub subjects: Entity,
    /// `roles`, `users` or `framework_principals`, by the action.
    pub objects: Entity,
}

/// Rules as written, one shape per action.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterFrameworkRule {
    principals: Entity,
    roles: Entity,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserRule {
    principals: Entity,
    users: Entity,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TeardownFrameworkRule {
    principals: Entity,
    framework_principals: Entity,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MarkAgentsGoneRule {
    principals: Entity,
    agents: Entity,
}

/// An ACL file as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AclsFile {
    permissive: Option<bool>,
    #[serde(default)]
    register_frameworks: Vec<RegisterFrameworkRule>,
    #[serde(default)]
    run_tasks: Vec<UserRule>,
    #[serde(default)]
    teardown_frameworks: Vec<TeardownFrameworkRule>,
    #[serde(default)]
    view_frameworks: Vec<UserRule>,
    #[serde(default)]
    view_tasks: Vec<UserRule>,
    #[serde(default)]
    mark_agents_gone: Vec<MarkAgentsGoneRule>,
}

/// A parsed ACL file: each action's rules, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Acls {
    /// What decides a request no rule applies to; the master's default
    /// when `None`.
    pub permissive: Option<bool>,
    pub register_frameworks: Vec<Rule>,
    pub run_tasks: Vec<Rule>,
    pub teardown_frameworks: Vec<Rule>,
    pub view_frameworks: Vec<Rule>,
    pub view_tasks: Vec<Rule>,
    pub mark_agents_gone: Vec<Rule>,
}

impl Acls {
    /// Parses ACLs in Mesos's JSON; refuses unknown keys and entities
    /// that say nothing.
    pub fn parse(json: &[u8]) -> Result<Acls, AclsError> {
        // Serde would also take the fields as an array, in order.
        let first = json.iter().find(|byte| !byte.is_ascii_whitespace());
        if first.is_some_and(|byte| *byte != b'{') {
            return Err(AclsError::Invalid {
                reason: "the acls must be a JSON object of actions to rules".into(),
            });
        }
        let file: AclsFile = serde_json::from_slice(json).map_err(|error| AclsError::Invalid {
            reason: error.to_string(),
        })?;
        let user_rules = |rules: Vec<UserRule>| {
            rules
                .into_iter()
                .map(|rule| Rule {
                    subjects: rule.principals,
                    objects: rule.users,
                })
                .collect()
        };
        Ok(Acls {
            permissive: file.permissive,
            register_frameworks: file
                .register_frameworks
                .into_iter()
                .map(|rule| Rule {
                    subjects: rule.principals,
                    objects: rule.roles,
                })
                .collect(),
            run_tasks: user_rules(file.run_tasks),
            teardown_frameworks: file
                .teardown_frameworks
                .into_iter()
                .map(|rule| Rule {
                    subjects: rule.principals,
                    objects: rule.framework_principals,
                })
                .collect(),
            view_frameworks: user_rules(file.view_frameworks),
            view_tasks: user_rules(file.view_tasks),
            mark_agents_gone: file
                .mark_agents_gone
                .into_iter()
                .map(|rule| Rule {
                    subjects: rule.principals,
                    objects: rule.agents,
                })
                .collect(),
        })
    }

    /// The rules of `action`, in the order they are tried.
    pub fn rules(&self, action: Action) -> &[Rule] {
        match action {
            Action::RegisterFrameworks => &self.register_frameworks,
            Action::RunTasks => &self.run_tasks,
            Action::TeardownFrameworks => &self.teardown_frameworks,
            Action::ViewFrameworks => &self.view_frameworks,
            Action::ViewTasks => &self.view_tasks,
            Action::MarkAgentsGone => &self.mark_agents_gone,
        }
    }

    /// How many rules there are, over all actions.
    pub fn len(&self) -> usize {
        Action::ALL
            .iter()
            .map(|action| self.rules(*action).len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl FromStr for Acls {
    type Err = AclsError;

    fn from_str(json: &str) -> Result<Acls, AclsError> {
        Acls::parse(json.as_bytes())
    }
}

/// What decides a request no rule applies to, when the file does not say
/// (`--authorization default-allow|default-deny`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DefaultDecision {
    /// Mesos's default (`permissive: true`).
    #[default]
    Allow,
    Deny,
}

impl FromStr for DefaultDecision {
    type Err = String;

    fn from_str(text: &str) -> Result<DefaultDecision, String> {
        match text {
            "default-allow" => Ok(DefaultDecision::Allow),
            "default-deny" => Ok(DefaultDecision::Deny),
            other => Err(format!(
                "unknown authorization default {other:?}: use default-allow or default-deny"
            )),
        }
    }
}

impl fmt::Display for DefaultDecision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DefaultDecision::Allow => "default-allow",
            DefaultDecision::Deny => "default-deny",
        })
    }
}

/// Why a request was refused, naming the rule that refused it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    /// Rule `number` (counted from 1, as a reader counts them in the file)
    /// applied and denies.
    Rule {
        action: Action,
        number: usize,
        rule: Rule,
    },
    /// No rule of the action applied, and unmatched requests are denied.
    Unmatched { action: Action },
}

impl Denial {
    pub fn action(&self) -> Action {
        match self {
            Denial::Rule { action, .. } | Denial::Unmatched { action } => *action,
        }
    }
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Denial::Rule {
                action,
                number,
                rule,
            } => write!(
                f,
                "{action} rule {number} (principals {}, {} {})",
                rule.subjects,
                action.object_key(),
                rule.objects
            ),
            Denial::Unmatched { action } => {
                write!(f, "no {action} rule matched and the default is deny")
            }
        }
    }
}

impl std::error::Error for Denial {}

/// Decides requests by ACLs. The default allows everything, as a master
/// without `--acls` does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Authorizer {
    acls: Acls,
    default: DefaultDecision,
}

impl Authorizer {
    /// Decides by `acls`; requests no rule applies to by the file's
    /// `permissive`, else by `default`.
    pub fn new(acls: Acls, default: DefaultDecision) -> Authorizer {
        Authorizer { acls, default }
    }

    pub fn acls(&self) -> &Acls {
        &self.acls
    }

    /// Whether a request no rule applies to is allowed.
    pub fn permissive(&self) -> bool {
        self.acls
            .permissive
            .unwrap_or(self.default == DefaultDecision::Allow)
    }

    /// Whether `principal` may register a framework in `role`.
    /// Whether every request is allowed: no rules, and the default (or
    /// the file's `permissive`) allows.
    pub fn allows_everything(&self) -> bool {
        self.acls.is_empty() && self.permissive()
    }

    pub fn may_register(&self, principal: Option<&str>, role: &str) -> Result<(), Denial> {
        self.authorize(Action::RegisterFrameworks, principal, Some(role))
    }

    /// Whether a framework of `principal` may run tasks as `user`.
    pub fn may_run_as(&self, principal: Option<&str>, user: &str) -> Result<(), Denial> {
        self.authorize(Action::RunTasks, principal, Some(user))
    }

    /// Whether `principal` may tear down a framework of
    /// `framework_principal` (`None`: a framework without one).
    pub fn may_teardown(
        &self,
        principal: Option<&str>,
        framework_principal: Option<&str>,
    ) -> Result<(), Denial> {
        self.authorize(Action::TeardownFrameworks, principal, framework_principal)
    }

    /// Whether `principal` may mark agent `agent_id` gone.
    pub fn may_mark_agent_gone(
        &self,
        principal: Option<&str>,
        agent_id: &str,
    ) -> Result<(), Denial> {
        self.authorize(Action::MarkAgentsGone, principal, Some(agent_id))
    }

    /// Whether `principal` may see a framework whose tasks run as `user`.
    pub fn may_view_framework(&self, principal: Option<&str>, user: &str) -> Result<(), Denial> {
        self.authorize(Action::ViewFrameworks, principal, Some(user))
    }

    /// Whether `principal` may see a task that runs as `user`.
    pub fn may_view_task(&self, principal: Option<&str>, user: &str) -> Result<(), Denial> {
        self.authorize(Action::ViewTasks, principal, Some(user))
    }

    /// Decides whether `subject` may do `action` to `object`: the first
    /// rule that applies decides, else the default.
    pub fn authorize(
        &self,
        action: Action,
        subject: Option<&str>,
        object: Option<&str>,
    ) -> Result<(), Denial> {
        let rules = self.acls.rules(action);
        let applying = rules
            .iter()
            .enumerate()
            .find(|(_, rule)| rule.subjects.matches(subject) && rule.objects.matches(object));
        match applying {
            Some((_, rule)) if rule.subjects.allows() && rule.objects.allows() => Ok(()),
            Some((index, rule)) => Err(Denial::Rule {
                action,
                number: index + 1,
                rule: rule.clone(),
            }),
            None if self.permissive() => Ok(()),
            None => Err(Denial::Unmatched { action }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use Action::*;
    use DefaultDecision::{Allow, Deny};

    /// Mesos's documentation's example, in order: only `ops` registers in
    /// `admin`; `alice` and `bob` register in `dev` and nobody else does;
    /// any principal registers in `*`.
    const EXAMPLE: &str = r#"{
        "register_frameworks": [
            {"principals": {"values": ["ops"]}, "roles": {"values": ["admin"]}},
            {"principals": {"type": "NONE"}, "roles": {"values": ["admin"]}},
            {"principals": {"values": ["alice", "bob"]}, "roles": {"values": ["dev"]}},
            {"principals": {"type": "NONE"}, "roles": {"values": ["dev"]}},
            {"principals": {"type": "ANY"}, "roles": {"values": ["*"]}}
        ],
        "run_tasks": [
            {"principals": {"type": "ANY"}, "users": {"values": ["root"]}},
            {"principals": {"values": ["alice"]}, "users": {"type": "NONE"}}
        ],
        "teardown_frameworks": [
            {"principals": {"values": ["ops"]}, "framework_principals": {"type": "ANY"}}
        ]
    }"#;

    /// An action, who asks and what for.
    type Request = (Action, Option<&'static str>, Option<&'static str>);

    /// ACLs, the default, a request and the expected decision: `Ok`, or
    /// the denial's text.
    type Case = (
        &'static str,
        DefaultDecision,
        Request,
        Result<(), &'static str>,
    );

    /// Decides one request by `acls` and compares with `expected`.
    fn check(
        acls: &str,
        default: DefaultDecision,
        (action, subject, object): Request,
        expected: Result<(), &str>,
    ) {
        let parsed: Acls = acls.parse().expect("test acls parse");
        let authorizer = Authorizer::new(parsed, default);
        let decided = authorizer
            .authorize(action, subject, object)
            .map_err(|denial| denial.to_string());
        assert_eq!(
            decided,
            expected.map_err(str::to_owned),
            "{action} by {subject:?} on {object:?} under {acls}"
        );
    }

    #[test]
    fn decisions() {
        let permissive_false = r#"{"permissive": false,
            "run_tasks": [{"principals": {"values": ["alice"]}, "users": {"values": ["alice"]}}]}"#;
        let permissive_true = r#"{"permissive": true}"#;
        let reversed = r#"{"register_frameworks": [
            {"principals": {"type": "NONE"}, "roles": {"values": ["admin"]}},
            {"principals": {"values": ["ops"]}, "roles": {"values": ["admin"]}}
        ]}"#;
        let cases: &[Case] = &[
            // The first rule that applies decides.
            (
                EXAMPLE,
                Allow,
                (RegisterFrameworks, Some("ops"), Some("admin")),
                Ok(()),
            ),
            (
                EXAMPLE,
                Allow,
                (RegisterFrameworks, Some("alice"), Some("admin")),
                Err(r#"register_frameworks rule 2 (principals NONE, roles ["admin"])"#),
            ),
            (
                EXAMPLE,
                Allow,
                (RegisterFrameworks, Some("bob"), Some("dev")),
                Ok(()),
            ),
            (
                EXAMPLE,
                Allow,
                (RegisterFrameworks, Some("ops"), Some("dev")),
                Err(r#"register_frameworks rule 4 (principals NONE, roles ["dev"])"#),
            ),
            (
                EXAMPLE,
                Deny,
                (RegisterFrameworks, Some("anyone"), Some("*")),
                Ok(()),
            ),
            // Order matters: the NONE rule first shuts ops out too.
            (
                reversed,
                Allow,
                (RegisterFrameworks, Some("ops"), Some("admin")),
                Err(r#"register_frameworks rule 1 (principals NONE, roles ["admin"])"#),
            ),
            // ANY subjects apply to every principal.
            (
                EXAMPLE,
                Allow,
                (RunTasks, Some("bob"), Some("root")),
                Ok(()),
            ),
            // NONE as the object denies what the subject would do.
            (
                EXAMPLE,
                Allow,
                (RunTasks, Some("alice"), Some("alice")),
                Err(r#"run_tasks rule 2 (principals ["alice"], users NONE)"#),
            ),
            // No rule applies: the default decides, unless the file says.
            (
                EXAMPLE,
                Allow,
                (RegisterFrameworks, Some("bob"), Some("ads")),
                Ok(()),
            ),
            (
                EXAMPLE,
                Deny,
                (RegisterFrameworks, Some("bob"), Some("ads")),
                Err("no register_frameworks rule matched and the default is deny"),
            ),
            (
                permissive_false,
                Allow,
                (RunTasks, Some("bob"), Some("bob")),
                Err("no run_tasks rule matched and the default is deny"),
            ),
            (
                permissive_false,
                Allow,
                (RunTasks, Some("alice"), Some("alice")),
                Ok(()),
            ),
            (
                permissive_true,
                Deny,
                (ViewTasks, Some("bob"), Some("bob")),
                Ok(()),
            ),
            // Actions without rules fall to the default.
            (
                EXAMPLE,
                Deny,
                (ViewFrameworks, Some("ops"), Some("root")),
                Err("no view_frameworks rule matched and the default is deny"),
            ),
            // A principal-less request is matched by ANY subjects only.
            (EXAMPLE, Deny, (RunTasks, None, Some("root")), Ok(())),
            (
                EXAMPLE,
                Deny,
                (RegisterFrameworks, None, Some("admin")),
                Err("no register_frameworks rule matched and the default is deny"),
            ),
            (EXAMPLE, Deny, (RegisterFrameworks, None, Some("*")), Ok(())),
            // Teardown: ops tears down anyone's framework, even one without
            // a principal; nobody else is matched.
            (
                EXAMPLE,
                Deny,
                (TeardownFrameworks, Some("ops"), None),
                Ok(()),
            ),
            (
                EXAMPLE,
                Deny,
                (TeardownFrameworks, Some("ops"), Some("alice")),
                Ok(()),
            ),
            (
                EXAMPLE,
                Deny,
                (TeardownFrameworks, Some("alice"), Some("bob")),
                Err("no teardown_frameworks rule matched and the default is deny"),
            ),
            // An empty file: everything is allowed, or everything denied.
            (
                "{}",
                Allow,
                (RegisterFrameworks, Some("x"), Some("y")),
                Ok(()),
            ),
            (
                "{}",
                Deny,
                (RunTasks, Some("x"), Some("y")),
                Err("no run_tasks rule matched and the default is deny"),
            ),
        ];
        for (acls, default, request, expected) in cases {
            check(acls, *default, *request, *expected);
        }
    }

    #[test]
    fn the_convenience_methods_ask_their_action() {
        let authorizer = Authorizer::new(EXAMPLE.parse().unwrap(), Deny);
        assert!(authorizer.may_register(Some("ops"), "admin").is_ok());
        assert!(authorizer.may_run_as(Some("bob"), "root").is_ok());
        assert!(authorizer.may_teardown(Some("ops"), Some("bob")).is_ok());
        let denied = authorizer.may_view_framework(Some("ops"), "root");
        assert_eq!(denied.map_err(|d| d.action()), Err(ViewFrameworks));
        let denied = authorizer.may_view_task(Some("ops"), "root");
        assert_eq!(denied.map_err(|d| d.action()), Err(ViewTasks));
        let everything = Authorizer::default();
        assert!(everything.permissive());
        assert!(everything.may_register(None, "anything").is_ok());
    }

    /// Parses `acls` and expects it refused with a message containing
    /// every one of `fragments`.
    fn check_refused(acls: &str, fragments: &[&str]) {
        let error = match acls.parse::<Acls>() {
            Ok(parsed) => panic!("{acls} parsed as {parsed:?}"),
            Err(error) => error.to_string(),
        };
        for fragment in fragments {
            assert!(error.contains(fragment), "{error:?} lacks {fragment:?}");
        }
    }

    #[test]
    fn refused_files() {
        let cases: &[(&str, &[&str])] = &[
            // A misspelt action must not leave its requests to the default.
            (
                r#"{"regster_frameworks": []}"#,
                &["unknown field `regster_frameworks`", "line 1"],
            ),
            // Mesos actions Strata does not enforce are refused too.
            (r#"{"reserve_resources": []}"#, &["reserve_resources"]),
            (
                r#"{"run_tasks": [{"principals": {"type": "ANY"}, "user": {"type": "ANY"}}]}"#,
                &["unknown field `user`"],
            ),
            (
                r#"{"run_tasks": [{"principals": {"type": "ANY"}}]}"#,
                &["missing field `users`"],
            ),
            (
                r#"{"run_tasks": [{"principals": {"type": "any"}, "users": {"type": "ANY"}}]}"#,
                &["unknown variant `any`"],
            ),
            (
                r#"{"run_tasks": [{"principals": {}, "users": {"type": "ANY"}}]}"#,
                &["an entity needs values"],
            ),
            (
                r#"{"run_tasks": [{"principals": {"type": "ANY", "values": ["a"]}, "users": {"type": "ANY"}}]}"#,
                &["takes no values"],
            ),
            (r#"{"permissive": "yes"}"#, &["invalid type"]),
            (r#"{"run_tasks": [}"#, &["the acls are not valid", "line 1"]),
            ("", &["EOF"]),
            ("[]", &["must be a JSON object"]),
            (" \n 7", &["must be a JSON object"]),
        ];
        for (acls, fragments) in cases {
            check_refused(acls, fragments);
        }
    }

    #[test]
    fn parsed_rules_keep_their_order() {
        let acls: Acls = EXAMPLE.parse().unwrap();
        assert_eq!(acls.len(), 8);
        assert_eq!(acls.permissive, None);
        assert_eq!(
            acls.rules(RegisterFrameworks)[0],
            Rule {
                subjects: Entity::Values(vec!["ops".into()]),
                objects: Entity::Values(vec!["admin".into()]),
            }
        );
        assert!(acls.rules(ViewTasks).is_empty());
        let explicit: Acls =
            r#"{"view_tasks": [{"principals": {"type": "SOME", "values": ["a"]}, "users": {"type": "ANY"}}]}"#
                .parse()
                .unwrap();
        assert_eq!(
            explicit.view_tasks[0].subjects,
            Entity::Values(vec!["a".into()])
        );
    }

    #[test]
    fn load_names_the_file() {
        let dir = std::env::temp_dir().join(format!("strata-acls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.json");
        std::fs::write(&good, EXAMPLE).unwrap();
        assert_eq!(load(&good).unwrap().len(), 8);
        let bad = dir.join("bad.json");
        std::fs::write(&bad, r#"{"run_task": []}"#).unwrap();
        let error = load(&bad).unwrap_err().to_string();
        assert!(
            error.contains("bad.json") && error.contains("run_task"),
            "{error}"
        );
        let missing = dir.join("missing.json");
        let error = load(&missing).unwrap_err().to_string();
        assert!(
            error.starts_with("cannot read the acls file") && error.contains("missing.json"),
            "{error}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn default_decisions_parse_from_the_flag() {
        assert_eq!("default-allow".parse(), Ok(Allow));
        assert_eq!("default-deny".parse(), Ok(Deny));
        assert_eq!(Deny.to_string(), "default-deny");
        let error = "deny".parse::<DefaultDecision>().unwrap_err();
        assert!(error.contains("default-deny"), "{error}");
    }
}
