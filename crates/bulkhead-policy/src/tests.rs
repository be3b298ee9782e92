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
