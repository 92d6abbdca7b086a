//! A key's or an organization's rate limit, credits and refill as a request
//! sets them, parsed with every bad field named.

use super::parse_duration;
use crate::domain::{
    self, parse_balance, parse_credits_to_add, parse_low_threshold, CreditsSetting, KeyRateLimit,
    RateUnit, Refill,
};
use crate::error::{FieldViolation, Violations};
use crate::proto;

/// A key's own rate limit as a request sets it (`field` names the message).
pub fn parse_rate_limit(
    field: &str,
    limit: &proto::RateLimit,
) -> Result<KeyRateLimit, FieldViolation> {
    let window_field = format!("{field}.window");
    let window = limit
        .window
        .as_ref()
        .ok_or_else(|| FieldViolation::new(&window_field, "is required"))?;
    let unit = match proto::RateLimitUnit::try_from(limit.unit) {
        Ok(proto::RateLimitUnit::Unspecified | proto::RateLimitUnit::Calls) => RateUnit::Calls,
        Ok(proto::RateLimitUnit::Credits) => RateUnit::Credits,
        Err(_) => {
            return Err(FieldViolation::new(
                format!("{field}.unit"),
                "must be RATE_LIMIT_UNIT_CALLS or RATE_LIMIT_UNIT_CREDITS",
            ))
        }
    };
    KeyRateLimit::parse(
        field,
        limit.limit,
        parse_duration(&window_field, window)?,
        unit,
    )
}

/// Credits as a request sets them (`field` names the message).
pub fn parse_credits(
    field: &str,
    credits: &proto::Credits,
) -> Result<CreditsSetting, FieldViolation> {
    Ok(CreditsSetting {
        remaining: parse_balance(&format!("{field}.remaining"), credits.remaining)?,
        refill: credits
            .refill
            .as_ref()
            .map(|refill| parse_refill(&format!("{field}.refill"), refill))
            .transpose()?,
        low_threshold: parse_low_threshold(
            &format!("{field}.low_threshold"),
            credits.low_threshold,
        )?,
    })
}

/// The update-mask paths of a rate limit and credits, which UpdateApiKey
/// and UpdateOrganization share.
pub const LIMIT_PATHS: [&str; 5] = [
    "rate_limit",
    "credits",
    "credits.remaining",
    "credits.refill",
    "credits.low_threshold",
];

/// The limits an update request sets: the resource's (`resource` names it
/// in field violations: `api_key`, `organization`) rate limit and credits,
/// and the request's `credits_to_add`.
pub struct LimitsRequest<'a> {
    pub resource: &'a str,
    pub rate_limit: Option<&'a proto::RateLimit>,
    pub credits: Option<&'a proto::Credits>,
    pub credits_to_add: i64,
}

/// Parses the limit paths among `paths` of an update request, and its
/// credits to add. At most one credits path, and not with an addition.
pub fn parse_limits_update(
    request: LimitsRequest<'_>,
    paths: &[&str],
    violations: &mut Violations,
) -> domain::LimitsUpdate {
    use domain::CreditsChange;
    let LimitsRequest {
        resource,
        rate_limit,
        credits,
        credits_to_add,
    } = request;
    let mut update = domain::LimitsUpdate::default();
    if credits_to_add != 0 {
        if paths.iter().any(|p| p.starts_with("credits")) {
            violations.push(FieldViolation::new(
                "credits_to_add",
                "adds to the balance: not with a credits path in update_mask",
            ));
        }
        violations.check(
            parse_credits_to_add("credits_to_add", credits_to_add)
                .map(|amount| update.credits = CreditsChange::Add(amount)),
        );
    }
    if paths.iter().filter(|p| p.starts_with("credits")).count() > 1 {
        violations.push(FieldViolation::new(
            "update_mask",
            "name credits, credits.remaining, credits.refill or credits.low_threshold, not several",
        ));
    }
    for path in paths {
        match *path {
            "rate_limit" => violations.check(
                rate_limit
                    .map(|limit| parse_rate_limit(&format!("{resource}.rate_limit"), limit))
                    .transpose()
                    .map(|limit| update.rate_limit = Some(limit)),
            ),
            "credits" => violations.check(
                credits
                    .map(|credits| parse_credits(&format!("{resource}.credits"), credits))
                    .transpose()
                    .map(|credits| update.credits = CreditsChange::Replace(credits)),
            ),
            "credits.remaining" => violations.check(
                parse_balance(
                    &format!("{resource}.credits.remaining"),
                    credits.map_or(0, |credits| credits.remaining),
                )
                .map(|remaining| update.credits = CreditsChange::Balance(remaining)),
            ),
            "credits.refill" => violations.check(
                credits
                    .and_then(|credits| credits.refill.as_ref())
                    .map(|refill| parse_refill(&format!("{resource}.credits.refill"), refill))
                    .transpose()
                    .map(|refill| update.credits = CreditsChange::Refill(refill)),
            ),
            "credits.low_threshold" => violations.check(
                parse_low_threshold(
                    &format!("{resource}.credits.low_threshold"),
                    credits.map_or(0, |credits| credits.low_threshold),
                )
                .map(|threshold| update.credits = CreditsChange::LowThreshold(threshold)),
            ),
            _ => {}
        }
    }
    update
}

pub fn parse_refill(field: &str, refill: &proto::Refill) -> Result<Refill, FieldViolation> {
    let interval_field = format!("{field}.interval");
    let interval = refill
        .interval
        .as_ref()
        .ok_or_else(|| FieldViolation::new(&interval_field, "is required"))?;
    Refill::parse(
        field,
        refill.amount,
        parse_duration(&interval_field, interval)?,
    )
}
