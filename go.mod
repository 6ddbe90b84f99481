module github.com/offerloop/n8nrunner

go 1.23

require (
	github.com/coder/websocket v1.8.15
	github.com/matoous/go-nanoid/v2 v2.1.0
	github.com/stretchr/testify v1.11.1
)

require (
	github.com/davecgh/go-spew v1.1.1 // indirect
	github.com/pmezard/go-difflib v1.0.0 // indirect
	gopkg.in/yaml.v3 v3.0.1 // indirect
)
