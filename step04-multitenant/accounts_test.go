package main

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"grpcworkshop/step04-multitenant/rpc"
)

func TestAccountsGetByToken(t *testing.T) {
	certs := devCerts(t)
	conn, err := dialAccounts(testServerConfig(t, certs, startAccounts(t, testAccountsConfig(t, certs, testAccounts))))
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	accounts := rpc.NewAccountsClient(conn)
	ctx := testContext(t)

	resp, err := accounts.GetByToken(ctx, &rpc.GetByTokenReq{Token: "small"})
	require.NoError(t, err)
	assert.EqualValues(t, 3, resp.Account.MaxCacheKeys)

	_, err = accounts.GetByToken(ctx, &rpc.GetByTokenReq{Token: "nobody"})
	assert.Equal(t, codes.NotFound, status.Code(err))
	_, err = accounts.GetByToken(ctx, &rpc.GetByTokenReq{Token: ""})
	assert.Equal(t, codes.InvalidArgument, status.Code(err))
}

func TestDefaultAccountsIncludeTheTalksToken(t *testing.T) {
	accounts, err := parseAccounts(defaultAccounts)
	require.NoError(t, err)
	require.Contains(t, accounts, "inconshreveable")
	assert.Positive(t, accounts["inconshreveable"].MaxCacheKeys)
}

func TestParseAccountsRejectsBadFiles(t *testing.T) {
	for name, data := range map[string]string{
		"not json":      `{"a": `,
		"missing limit": `{"a": {}}`,
		"negative":      `{"a": {"max_cache_keys": -1}}`,
		"empty token":   `{"": {"max_cache_keys": 1}}`,
	} {
		_, err := parseAccounts([]byte(data))
		assert.Error(t, err, name)
	}
}
