// A real OpenID Connect provider for the tests (npm oidc-provider, dev interactions on).
// usage: node idp.mjs PORT REDIRECT_URI[,REDIRECT_URI...]
// Any login name is accepted. Groups come from the name: "admin*" -> users + hubadmins,
// "guest*" -> guests, anything else -> users. Access tokens live ACCESS_TTL seconds.
import Provider from 'oidc-provider';

const port = Number(process.argv[2] || 9010);
const redirectUris = (process.argv[3] || `http://127.0.0.1:8081/hub/oauth_callback`).split(',');
const accessTtl = Number(process.env.ACCESS_TTL || 3600);
const issuer = `http://127.0.0.1:${port}`;

function groupsOf(id) {
  if (id.startsWith('admin')) return ['users', 'hubadmins'];
  if (id.startsWith('guest')) return ['guests'];
  return ['users'];
}

const provider = new Provider(issuer, {
  clients: [{
    client_id: 'hub', client_secret: 'hubsecret', redirect_uris: redirectUris,
    grant_types: ['authorization_code', 'refresh_token'], response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  async findAccount(ctx, id) {
    return {
      accountId: id,
      async claims() {
        return { sub: id, email: `${id}@example.org`, email_verified: true, name: id,
                 preferred_username: id, groups: groupsOf(id) };
      },
    };
  },
  claims: { openid: ['sub'], email: ['email', 'email_verified'],
            profile: ['name', 'preferred_username'], groups: ['groups'] },
  scopes: ['openid', 'email', 'profile', 'groups', 'offline_access'],
  features: { devInteractions: { enabled: true } },
  issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
  ttl: { AccessToken: accessTtl },
  cookies: { keys: ['courtyard-test-cookie-key'] },
});
provider.listen(port, '127.0.0.1', () => console.log(`listening on ${issuer}`));
