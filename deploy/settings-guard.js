'use strict';

// Local plugin: refuse to deploy functions whose settings resolved empty or unsafe.
//
// Stage `dev` reads the settings from the shell's environment and leaves them empty when
// unset, so that `make package` and `sls invoke local` work offline; deploying that would
// ship functions that cannot start. On `sls deploy` (and `sls deploy function`) this stops
// before the package is built and before any AWS call, naming what is missing and where it
// is read from. Other commands are not concerned.
//
// Two auth rules guard the HTTP functions (SECURITY.md):
// - JWKS mode (AUTH_JWKS_URL set) needs AUTH_ISSUER and AUTH_AUDIENCE: without them any token
//   the key set signs, for any audience, would be accepted;
// - AUTH_TRUST_AUTHORIZER=true makes the functions believe the claims in the event, so every
//   route they serve with a user's JWT must have API Gateway's JWT authorizer attached. The
//   Prometheus route takes the scrape token, never a JWT: it is exempt.

const REQUIRED = ['UPSTASH_REDIS_REST_URL', 'UPSTASH_REDIS_REST_TOKEN'];
const SCRAPE_PATH = '/api/agent/rebalance/metrics/prometheus';

function routeOf(event) {
  const api = event.httpApi;
  if (typeof api === 'string') {
    const [method, path] = api.trim().split(/\s+/);
    return { method, path, authorizer: undefined };
  }
  return { method: api.method, path: api.path, authorizer: api.authorizer };
}

class SettingsGuard {
  constructor(serverless) {
    this.serverless = serverless;
    this.hooks = {
      'package:initialize': () => this.check(),
      'deploy:function:initialize': () => this.check(),
    };
  }

  isDeploy() {
    const commands = (this.serverless.processedInput || {}).commands || [];
    return commands[0] === 'deploy';
  }

  environment(fn) {
    return { ...(this.serverless.service.provider.environment || {}), ...(fn.environment || {}) };
  }

  problems(name, fn) {
    const env = this.environment(fn);
    const empty = (key) => env[key] === undefined || String(env[key]).trim() === '';
    const found = REQUIRED.filter(empty);
    const http = (fn.events || []).some((event) => event.httpApi);
    const trusted = String(env.AUTH_TRUST_AUTHORIZER).toLowerCase() === 'true';
    if (http && !trusted && empty('AUTH_JWT_SECRET') && empty('AUTH_JWKS_URL')) {
      found.push('AUTH_JWT_SECRET or AUTH_JWKS_URL');
    }
    if (http && !trusted && !empty('AUTH_JWKS_URL')) {
      found.push(...['AUTH_ISSUER', 'AUTH_AUDIENCE'].filter(empty).map((k) => `${k} (JWKS mode)`));
    }
    return found.length ? [`${name}: ${found.join(', ')}`] : [];
  }

  unguardedRoutes(name, fn) {
    const env = this.environment(fn);
    if (String(env.AUTH_TRUST_AUTHORIZER).toLowerCase() !== 'true') return [];
    return (fn.events || [])
      .filter((event) => event.httpApi)
      .map(routeOf)
      .filter((route) => route.path !== SCRAPE_PATH && !route.authorizer)
      .map((route) => `${name}: ${String(route.method).toUpperCase()} ${route.path}`);
  }

  check() {
    if (!this.isDeploy()) return;
    const service = this.serverless.service;
    const functions = service.getAllFunctions().map((name) => [name, service.getFunction(name)]);
    const problems = functions.flatMap(([name, fn]) => this.problems(name, fn));
    const unguarded = functions.flatMap(([name, fn]) => this.unguardedRoutes(name, fn));
    if (!problems.length && !unguarded.length) return;
    const messages = [];
    if (problems.length) {
      const stage = this.serverless.getProvider('aws').getStage();
      const where =
        stage === 'dev'
          ? 'Stage dev reads them from the environment of the shell that runs sls: export them.'
          : `Stage ${stage} reads them from SSM parameters under /agent-rebalance/${stage}/ ` +
            '(or --param), see docs/deploy.md.';
      messages.push(
        `Refusing to deploy functions with empty settings:\n  ${problems.join('\n  ')}\n${where}`
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
