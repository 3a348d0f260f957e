module vk-fargate/guestagent

go 1.22
