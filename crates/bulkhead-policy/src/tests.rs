//! Decisions of the default policies, tenant policies, the guardrail and
//! approval annotations.

use super::*;
use bulkhead_core::{Principal, PrincipalKind, Role};
use serde_json::json;

fn user(roles: &[Role]) -> Principal {
    Principal::new("key:1", PrincipalKind::ApiKey, roles.to_vec())
}

fn allowed(
    e: &PolicyEngine,
    p: &TenantPolicies,
    who: &Principal,
    action: Action,
    r: &Resource<'_>,
) -> bool {
    e.decide(p, "acme", who, action, r).unwrap().allowed
}

fn slack<'a>(args: &'a Value) -> Resource<'a> {
    Resource::Tool {
        name: "slack",
        risk: "write",
        kind: "slack",
        connection: "slack",
        arguments: args,
    }
}

#[test]
fn default_policies_give_each_role_what_it_had() {
    let e = PolicyEngine::new(None).unwrap();
    let p = e.platform();
    let admin = user(&[Role::Admin]);
    let member = user(&[Role::Member]);
    let viewer = user(&[Role::Viewer]);
    let approver = user(&[Role::Approver]);
    let args = json!({"channel": "#ops"});
    for (who, action, resource, expect) in [
        (
            &admin,
            Action::ManageCredentials,
            Resource::Connection("slack"),
            true,
        ),
        (
            &member,
            Action::ManageCredentials,
            Resource::Connection("slack"),
            false,
        ),
        (&viewer, Action::ReadAudit, Resource::Tenant, true),
        (&viewer, Action::RunAgent, Resource::Agent("support"), false),
        (&member, Action::RunAgent, Resource::Agent("support"), true),
        (&member, Action::CallTool, slack(&args), true),
        (
            &member,
            Action::ManageDocuments,
            Resource::Collection("faq"),
            true,
        ),
        (
            &member,
            Action::ManageCollections,
            Resource::Collection("faq"),
            false,
        ),
        (
            &admin,
            Action::ManageCollections,
            Resource::Collection("faq"),
            true,
        ),
        (&member, Action::ManagePolicies, Resource::Tenant, false),
        (&admin, Action::ManagePolicies, Resource::Tenant, true),
        (&admin, Action::Approve, approval(false), false),
        (&approver, Action::Approve, approval(false), true),
        (&approver, Action::Approve, approval(true), false),
        (&viewer, Action::ReadApprovals, Resource::Tenant, true),
        (&approver, Action::UseModels, Resource::Tenant, true),
    ] {
        assert_eq!(
            allowed(&e, &p, who, action, &resource),
            expect,
            "{:?} {action:?} {resource:?}",
            who.roles()
        );
    }
}

#[test]
fn tenant_policies_forbid_by_argument_and_forbid_wins() {
    let e = PolicyEngine::new(None).unwrap();
    let p = e
        .compile(
            r##"
            // No posting to #general, whoever asks.
            forbid(principal, action == Action::"call_tool", resource)
              when { resource.kind == "slack" && resource.hasTag("channel")
                     && resource.getTag("channel") == "#general" };
            // Viewers may not even read usage here… but a permit cannot undo a forbid.
            permit(principal, action == Action::"manage_credentials", resource);
            forbid(principal, action == Action::"manage_credentials", resource)
              unless { principal.roles.contains("admin") };
            "##,
        )
        .unwrap();
    let member = user(&[Role::Member]);
    let general = json!({"channel": "#general", "text": "hi"});
    let ops = json!({"channel": "#ops", "text": "hi"});
    assert!(!allowed(
        &e,
        &p,
        &member,
        Action::CallTool,
        &slack(&general)
    ));
    assert!(allowed(&e, &p, &member, Action::CallTool, &slack(&ops)));
    assert!(!allowed(
        &e,
        &p,
        &member,
        Action::ManageCredentials,
        &Resource::Connection("x")
    ));
    let d = e
        .decide(&p, "acme", &member, Action::CallTool, &slack(&general))
        .unwrap();
    assert_eq!(d.policies, ["tenant.0"], "the deciding forbid is named");
}

#[test]
fn an_approval_annotation_makes_a_permit_conditional() {
    let e = PolicyEngine::new(None).unwrap();
    let p = e
        .compile(
            r#"
            @approval("required")
            permit(principal, action == Action::"call_tool", resource)
              when { resource.risk == "write" };
            "#,
        )
        .unwrap();
    let member = user(&[Role::Member]);
    let args = json!({"channel": "#ops"});
    let d = e
        .decide(&p, "acme", &member, Action::CallTool, &slack(&args))
        .unwrap();
    assert!(d.allowed && d.approval, "{d:?}");
    let read = Resource::Tool {
        name: "status",
        risk: "read",
        kind: "http",
        connection: "",
        arguments: &args,
    };
    let d = e
        .decide(&p, "acme", &member, Action::CallTool, &read)
        .unwrap();
    assert!(d.allowed && !d.approval, "{d:?}");
}

#[test]
fn a_careless_permit_cannot_cross_tenants() {
    let e = PolicyEngine::new(Some("permit(principal, action, resource);")).unwrap();
    let p = e.platform();
    let viewer = user(&[Role::Viewer]);
    assert!(allowed(
        &e,
        &p,
        &viewer,
        Action::ManagePolicies,
        &Resource::Tenant
    ));
    // A resource of another tenant (which the server never builds, but a
    // bug might): the built-in forbid refuses it.
    let foreign = e
        .decide_in(
            &p,
            "acme",
            "globex",
            &viewer,
            Action::ReadAudit,
            &Resource::Tenant,
        )
        .unwrap();
    assert!(!foreign.allowed);
    assert_eq!(foreign.policies, ["builtin.builtin-tenant-isolation"]);
}

#[test]
fn invalid_policies_are_refused_with_the_validators_message() {
    let e = PolicyEngine::new(None).unwrap();
    for (text, needle) in [
        (
            "permit(principal, action, resource",
            "unexpected end of input",
        ),
        (
            r#"permit(principal, action == Action::"fly", resource);"#,
            "fly",
        ),
        (
            r#"permit(principal, action == Action::"call_tool", resource) when { resource.colour == "red" };"#,
            "colour",
        ),
        (
            r#"permit(principal == ?principal, action, resource);"#,
            "templates",
        ),
    ] {
        let err = e.compile(text).unwrap_err().to_string();
        assert!(err.contains(needle), "{text} → {err}");
    }
    assert!(
        PolicyEngine::new(Some(
            "permit(principal, action == Action::\"nope\", resource);"
        ))
        .is_err()
    );
    assert!(e.compile("  ").is_ok(), "empty: the platform's alone");
}

fn approval(own_request: bool) -> Resource<'static> {
    Resource::Approval {
        agent: "support",
        own_request,
    }
}

#[test]
fn a_tenant_may_let_approvers_approve_their_own_runs() {
    let e = PolicyEngine::new(None).unwrap();
    let approver = user(&[Role::Approver]);
    assert!(!allowed(
        &e,
        &e.platform(),
        &approver,
        Action::Approve,
        &approval(true)
    ));
    let p = e
        .compile(
            r#"@id("self-approval")
            permit(principal, action == Action::"approve", resource)
              when { principal.roles.contains("approver") && context.own_request };"#,
        )
        .unwrap();
    assert!(allowed(&e, &p, &approver, Action::Approve, &approval(true)));
    // Still only approvers.
    let member = user(&[Role::Member]);
    assert!(!allowed(&e, &p, &member, Action::Approve, &approval(true)));
}

/// Every way policy text can nest, `depth` levels deep.
fn nested(shape: usize, depth: usize) -> String {
    let (open, close, inner) = match shape {
        0 => ("(", ")", "true"),
        1 => ("[", "]", "1"),
        2 => ("{a: ", "}", "1"),
        3 => ("[1].contains(", ")", "1"),
        4 => ("if true then ", " else false", "true"),
        5 => ("if false then false else ", "", "true"),
        _ => ("(!", ")", "true"),
    };
    format!(
        "permit(principal, action, resource) when {{ {}{inner}{} }};",
        open.repeat(depth),
        close.repeat(depth)
    )
}

/// Compiles (and, if accepted, decides with) `text` on a thread with the
/// 2 MiB stack tokio's workers have: a stack overflow aborts the test run.
fn survives(e: &Arc<PolicyEngine>, text: String) -> Result<(), String> {
    let e = e.clone();
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || match e.compile(&text) {
            Ok(p) => {
                let who = user(&[Role::Admin]);
                e.decide(&p, "acme", &who, Action::ReadAudit, &Resource::Tenant)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
            Err(err) => Err(err.to_string()),
        })
        .unwrap()
        .join()
        .map_err(|_| "the compile thread panicked".to_owned())?
}

#[test]
fn deeply_nested_policies_are_refused_before_cedar_recurses() {
    let e = Arc::new(PolicyEngine::new(None).unwrap());
    for shape in 0..7 {
        // 150 parentheses (350 bytes) aborted the server before the bound.
        for depth in [150, 2_000, 20_000] {
            let err = survives(&e, nested(shape, depth)).unwrap_err();
            assert!(
                err.contains("nest more than 24 levels") || err.contains("longer than"),
                "{shape}/{depth}: {err}"
            );
        }
        // Right at the bound the text reaches Cedar and nothing overflows
        // (it may still be refused by the validator: a type error).
        let _ = survives(&e, nested(shape, nesting::MAX_POLICY_NESTING - 2));
    }
}

#[test]
fn random_nesting_below_the_bound_never_overflows() {
    // A fuzz-style sweep: random mixes of every nesting form, closed in
    // order, at every depth up to a little past the bound.
    let e = Arc::new(PolicyEngine::new(None).unwrap());
    let openers = [
        ("(", ")"),
        ("[", "]"),
        ("{a: ", "}"),
        ("[1].contains(", ")"),
        ("if true then ", " else false"),
    ];
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..200 {
        let depth = (next() % 40) as usize;
        let mut open = String::new();
        let mut close = Vec::new();
        for _ in 0..depth {
            let (o, c) = openers[(next() % openers.len() as u64) as usize];
            open.push_str(o);
            close.push(c);
        }
        close.reverse();
        let text = format!(
            "permit(principal, action, resource) when {{ {open}true{} }};",
            close.concat()
        );
        if let Err(err) = survives(&e, text) {
            // Refused is fine; only an abort would fail the run.
            assert!(!err.contains("panicked"), "round {round}: {err}");
        }
    }
}

#[test]
fn the_permissive_platform_permits_every_role_but_not_across_tenants() {
    let e = PolicyEngine::new(Some(PERMIT_ALL)).unwrap();
    let p = e.platform();
    let nobody = user(&[]);
    let args = json!({"channel": "#ops"});
    let d = e
        .decide(&p, "acme", &nobody, Action::CallTool, &slack(&args))
        .unwrap();
    assert!(d.allowed && !d.approval, "{d:?}");
    let d = e
        .decide_in(
            &p,
            "acme",
            "globex",
            &nobody,
            Action::CallTool,
            &slack(&args),
        )
        .unwrap();
    assert!(!d.allowed, "the guardrail still holds: {d:?}");
}

#[test]
fn cached_decisions_on_the_tenant_follow_the_set_the_principal_and_the_tenant() {
    let e = PolicyEngine::new(None).unwrap();
    let p = e.platform();
    let member = user(&[Role::Member]);
    let viewer = user(&[Role::Viewer]);
    // Asked twice: the second answer is the cache's, and the same.
    for _ in 0..2 {
        assert!(allowed(
            &e,
            &p,
            &member,
            Action::UseModels,
            &Resource::Tenant
        ));
        assert!(allowed(
            &e,
            &p,
            &viewer,
            Action::ReadAudit,
            &Resource::Tenant
        ));
    }
    assert_eq!(p.decisions.lock().unwrap().len(), 2);
    // Another tenant's question is not answered from acme's entry.
    let forbid_globex = e
        .compile(r#"forbid(principal, action == Action::"use_models", resource) when { principal.tenant == "globex" };"#)
        .unwrap();
    assert!(allowed(
        &e,
        &forbid_globex,
        &member,
        Action::UseModels,
        &Resource::Tenant
    ));
    assert!(
        !e.decide(
            &forbid_globex,
            "globex",
            &member,
            Action::UseModels,
            &Resource::Tenant
        )
        .unwrap()
        .allowed
    );
    // A new set (a policy change) does not see the old set's answers.
    let forbid_all = e
        .compile(r#"forbid(principal, action == Action::"use_models", resource);"#)
        .unwrap();
    assert!(!allowed(
        &e,
        &forbid_all,
        &member,
        Action::UseModels,
        &Resource::Tenant
    ));
    assert!(allowed(
        &e,
        &p,
        &member,
        Action::UseModels,
        &Resource::Tenant
    ));
}
