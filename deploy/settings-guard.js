'use strict';

// Local plugin: refuse to deploy functions whose settings are missing, or that would carry a
// secret's value.
//
// A deployed function gets each secret as the *name* of an SSM SecureString parameter
// (`X_SSM_PARAMETER`) and reads it at its cold start, so that no secret value is in the
// template, the state file or the deployment bucket. Stage `dev` also fills `X` from the
// shell's environment, for `sls invoke local`; deploying that would ship the value. On
// `sls deploy` (and `sls deploy function`) this stops before the package is built and before
// any AWS call, naming each function with what it lacks or would leak; a prebuilt package
// (`sls deploy --package DIR`) is checked again, on its compiled template, before the upload.
// Other commands are not concerned.
//
// Two auth rules guard the HTTP functions (SECURITY.md):
// - JWKS mode (AUTH_JWKS_URL set) needs AUTH_ISSUER and AUTH_AUDIENCE: without them any token
//   the key set signs, for any audience, would be accepted;
// - AUTH_TRUST_AUTHORIZER=true makes the functions believe the claims in the event, so every
//   route they serve with a user's JWT must have API Gateway's JWT authorizer attached. The
//   Prometheus route takes the scrape token, never a JWT: it is exempt.

const REQUIRED = ['UPSTASH_REDIS_REST_URL', 'UPSTASH_REDIS_REST_TOKEN'];
// The values that must never reach an artifact (DESIGN.md, Configuration).
const SECRETS = [
  'UPSTASH_REDIS_REST_TOKEN',
  'AUTH_JWT_SECRET',
  'METRICS_SCRAPE_TOKEN',
  'REBALANCE_WEBHOOK_SECRET',
];
const SUFFIX = '_SSM_PARAMETER';
const SCRAPE_PATH = '/api/agent/rebalance/metrics/prometheus';

function routeOf(event) {
  const api = event.httpApi;
  if (typeof api === 'string') {
    const [method, path] = api.trim().split(/\s+/);
    return { method, path, authorizer: undefined };
  }
  return { method: api.method, path: api.path, authorizer: api.authorizer };
}

const filled = (env, key) => env[key] !== undefined && String(env[key]).trim() !== '';

class SettingsGuard {
  constructor(serverless) {
    this.serverless = serverless;
    this.hooks = {
      'package:initialize': () => this.check(),
      'deploy:function:initialize': () => this.check(),
      'before:deploy:deploy': () => this.checkTemplate(),
    };
  }

  isDeploy() {
    const commands = (this.serverless.processedInput || {}).commands || [];
    return commands[0] === 'deploy';
  }

  missing(env, http) {
    const set = (key) => filled(env, key) || filled(env, key + SUFFIX);
    const found = REQUIRED.filter((key) => !set(key));
    const trusted = String(env.AUTH_TRUST_AUTHORIZER).toLowerCase() === 'true';
    if (http && !trusted && !set('AUTH_JWT_SECRET') && !filled(env, 'AUTH_JWKS_URL')) {
      found.push('AUTH_JWT_SECRET or AUTH_JWKS_URL');
    }
    if (http && !trusted && filled(env, 'AUTH_JWKS_URL')) {
      const absent = ['AUTH_ISSUER', 'AUTH_AUDIENCE'].filter((key) => !filled(env, key));
      found.push(...absent.map((key) => `${key} (JWKS mode)`));
    }
    return found;
  }

  unguardedRoutes({ name, env, events }) {
    if (String(env.AUTH_TRUST_AUTHORIZER).toLowerCase() !== 'true') return [];
    return events
      .filter((event) => event.httpApi)
      .map(routeOf)
      .filter((route) => route.path !== SCRAPE_PATH && !route.authorizer)
      .map((route) => `${name}: ${String(route.method).toUpperCase()} ${route.path}`);
  }

  environments() {
    const service = this.serverless.service;
    return service.getAllFunctions().map((name) => {
      const fn = service.getFunction(name);
      const env = { ...(service.provider.environment || {}), ...(fn.environment || {}) };
      const events = fn.events || [];
      // The ws function verifies tokens like the HTTP routes: the same auth rules apply.
      const http = events.some((event) => event.httpApi || event.websocket);
      return { name, env, events, http };
    });
  }

  check() {
    if (!this.isDeploy()) return;
    const functions = this.environments();
    const missing = functions.flatMap(({ name, env, http }) => {
      const found = this.missing(env, http);
      return found.length ? [`${name}: ${found.join(', ')}`] : [];
    });
    const unguarded = functions.flatMap((fn) => this.unguardedRoutes(fn));
    if (missing.length || unguarded.length) this.refuseMissing(missing, unguarded);
    this.refuseLeaks(functions);
  }

  // A prebuilt package skips packaging: read what it would deploy.
  checkTemplate() {
    const resources = this.serverless.service.provider.compiledCloudFormationTemplate.Resources;
    const functions = Object.entries(resources)
      .filter(([, resource]) => resource.Type === 'AWS::Lambda::Function')
      .map(([name, resource]) => ({
        name,
        env: ((resource.Properties || {}).Environment || {}).Variables || {},
      }));
    this.refuseLeaks(functions);
  }

  refuseLeaks(functions) {
    const leaks = functions.flatMap(({ name, env }) => {
      const found = SECRETS.filter((key) => filled(env, key));
      return found.length ? [`${name}: ${found.join(', ')}`] : [];
    });
    if (!leaks.length) return;
    throw new this.serverless.classes.Error(
      `Refusing to deploy secret values in plain text:\n  ${leaks.join('\n  ')}\n` +
        'Deployed functions read secrets from SSM at run time (docs/deploy.md); stage dev ' +
        'takes these from the shell for `sls invoke local`: unset them before `sls deploy`.',
      'SECRET_IN_ARTIFACT'
    );
  }

  refuseMissing(problems, unguarded) {
    const messages = [];
    if (problems.length) {
      messages.push(
        `Refusing to deploy functions with empty settings:\n  ${problems.join('\n  ')}\n` +
          'Each needs the name of its SSM parameter (the ...Parameter params of serverless.yml, ' +
          'see docs/deploy.md) or, for non-secrets, a value.'
      );
    }
    if (unguarded.length) {
      messages.push(
        'Refusing to deploy AUTH_TRUST_AUTHORIZER=true without a JWT authorizer on:\n  ' +
          `${unguarded.join('\n  ')}\n` +
          'These functions would believe any claims: attach `authorizer: {name: jwt}` to ' +
          'each route (docs/deploy.md), or set authTrustAuthorizer to false.'
      );
    }
    throw new this.serverless.classes.Error(messages.join('\n'), 'UNSAFE_SETTINGS');
  }
}

module.exports = SettingsGuard;
